// A DeepSpeech 0.9.3 scorer package made by DeepSpeech's own compiled decoder code: the ds-ctcdecoder
// wheel's Scorer::load_lm, fill_dictionary and save_dictionary, called in the order generate_scorer_package
// calls them (alphabet mode, never bytes output mode). tools/make_ds_scorer_fixture.py builds and runs it;
// dsita's own writer (dsita.export.ds_scorer) must reproduce its output byte for byte.
//   usage: ds_scorer_reference ALPHABET LM_BINARY VOCABULARY OUT ALPHA BETA
#include <fstream>
#include <iostream>
#include <string>
#include <unordered_set>

#include "alphabet.h"
#include "ctcdecode/scorer.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::cerr << "usage: ds_scorer_reference ALPHABET LM_BINARY VOCABULARY OUT ALPHA BETA\n";
    return 2;
  }
  std::unordered_set<std::string> words;
  std::ifstream vocabulary(argv[3]);
  for (std::string word; vocabulary >> word;) words.insert(word);

  Alphabet alphabet;
  if (alphabet.init(argv[1]) != 0) {
    std::cerr << "cannot read the alphabet " << argv[1] << "\n";
    return 1;
  }
  Scorer scorer;
  scorer.set_alphabet(alphabet);
  scorer.set_utf8_mode(false);
  scorer.reset_params(std::stof(argv[5]), std::stof(argv[6]));
  // A bare KenLM binary has no trie yet: that is the one answer that lets the package be made.
  int status = scorer.load_lm(argv[2]);
  if (status != DS_ERR_SCORER_NO_TRIE) {
    std::cerr << "load_lm(" << argv[2] << ") returned " << status << "\n";
    return 1;
  }
  scorer.fill_dictionary(words);
  {
    std::ifstream lm(argv[2], std::ios::binary);
    std::ofstream package(argv[4], std::ios::binary);
    package << lm.rdbuf();
  }
  if (!scorer.save_dictionary(argv[4], true)) {
    std::cerr << "save_dictionary(" << argv[4] << ") failed\n";
    return 1;
  }
  std::cerr << words.size() << " words: wrote " << argv[4] << "\n";
  return 0;
}
