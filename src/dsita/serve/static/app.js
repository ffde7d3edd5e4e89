// dsita serve's page: the microphone, or a file, streamed to the server in vosk-server's WebSocket protocol
// (binary 16-bit PCM frames, a JSON config first, {"eof": 1} last). No build step, no dependencies.

const MIC_FRAME_SECONDS = 0.1; // microphone audio per WebSocket frame
const FILE_FRAME_SECONDS = 0.25; // a file goes frame by frame, each after the reply to the one before
const DEFAULT_BOOST = 5;
const LOW_CONFIDENCE = 0.5;
const BEHIND_BYTES = 1 << 20; // unsent microphone audio (about 10 s at 48 kHz) that counts as falling behind

const $ = (id) => document.getElementById(id);
const ui = {
  mic: $("mic"), file: $("file"), fileButton: document.querySelector(".file-button"), itn: $("itn"),
  hotwords: $("hotwords"), status: $("status"), final: $("final"), partial: $("partial"),
  words: document.querySelector("#words tbody"), model: $("model"),
};

let info = { sample_rate: 16000, itn: false };
let microphone = null; // the running capture: {stream, context, node, session, flush}

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

function setBusy(busy) {
  ui.file.disabled = busy;
  ui.fileButton.classList.toggle("disabled", busy);
  ui.itn.disabled = busy;
  ui.hotwords.disabled = busy;
}

// "word or phrase[:boost]" per line -> {"word or phrase": boost}; a bad boost throws.
function parseHotwords(text) {
  const hotwords = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const colon = line.lastIndexOf(":");
    let phrase = line;
    let boost = DEFAULT_BOOST;
    if (colon >= 0) {
      phrase = line.slice(0, colon).trim();
      boost = Number(line.slice(colon + 1));
      if (!Number.isFinite(boost) || line.slice(colon + 1).trim() === "") {
        throw new Error(`hot word "${line}": the boost after ":" must be a number`);
      }
    }
    if (phrase) hotwords[phrase] = boost;
  }
  return hotwords;
}

// Browsers decode 16-bit audio as x / 32768 below zero and x / 32767 above it: the inverse gives a 16-bit
// WAV's samples back exactly.
function toInt16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const x = samples[i];
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(x < 0 ? x * 32768 : x * 32767)));
  }
  return pcm;
}

function clearTranscript() {
  ui.final.replaceChildren();
  ui.partial.textContent = "";
  ui.words.replaceChildren();
}

function cell(text, number) {
  const td = document.createElement("td");
  td.textContent = text;
  if (number) td.className = "number";
  return td;
}

function showResult(message) {
  ui.partial.textContent = "";
  if (!message.text) return;
  const words = message.result || message.text.split(" ").map((word) => ({ word }));
  for (const w of words) {
    if (ui.final.childNodes.length) ui.final.append(" ");
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = w.word;
    if (w.start !== undefined) {
      span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s, confidence ${w.conf.toFixed(2)}`;
      if (w.conf < LOW_CONFIDENCE) span.classList.add("low");
      const row = document.createElement("tr");
      row.append(cell(w.word), cell(w.start.toFixed(2), true), cell(w.end.toFixed(2), true),
        cell(w.conf.toFixed(2), true));
      ui.words.append(row);
      row.scrollIntoView({ block: "nearest" });
    }
    ui.final.append(span);
  }
}

function show(message) {
  if (message.error !== undefined) setStatus(`Server: ${message.error}`, "error");
  else if (message.partial !== undefined) ui.partial.textContent = message.partial;
  else if (message.text !== undefined) showResult(message);
}

// One WebSocket session: every reply is shown; `request` also waits for the reply to its frame.
class Session {
  static open(sampleRate) {
    const config = { sample_rate: sampleRate, words: true, itn: ui.itn.checked };
    const hotwords = parseHotwords(ui.hotwords.value);
    if (Object.keys(hotwords).length) config.hotwords = hotwords;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${scheme}://${location.host}/`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        ws.send(JSON.stringify({ config }));
        resolve(new Session(ws));
      };
      ws.onerror = () => reject(new Error("cannot reach the server"));
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.waiters = [];
    this.closed = new Promise((resolve) => {
      ws.onclose = (event) => {
        for (const waiter of this.waiters.splice(0)) waiter(null);
        resolve(event);
      };
    });
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      show(message);
      const waiter = this.waiters.shift();
      if (waiter) waiter(message);
    };
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(samples) {
    if (!this.open) return;
    this.ws.send(toInt16(samples).buffer);
    // The server reads a session's frames one at a time: audio it has not taken yet waits here.
    const behind = this.ws.bufferedAmount > BEHIND_BYTES;
    if (behind !== this.behind && ui.status.dataset.state === "listening") {
      setStatus(behind ? "Listening… the server is falling behind." : "Listening… press Stop when you are done.",
        "listening");
    }
    this.behind = behind;
  }

  request(samples) {
    return new Promise((resolve) => {
      if (!this.open) return resolve(null);
      this.waiters.push(resolve);
      this.send(samples);
    });
  }

  async finish() {
    if (this.open) this.ws.send(JSON.stringify({ eof: 1 }));
    await this.closed;
  }
}

function concat(chunks, length) {
  const out = new Float32Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

async function startMicrophone() {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    throw new Error("the microphone needs a secure page: open it as http://localhost:PORT/ or over https");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule("pcm-worklet.js");
  const session = await Session.open(context.sampleRate);
  const node = new AudioWorkletNode(context, "pcm-capture");
  const frame = Math.round(context.sampleRate * MIC_FRAME_SECONDS);
  let chunks = [];
  let length = 0;
  const flush = () => {
    if (length) session.send(concat(chunks, length));
    chunks = [];
    length = 0;
  };
  node.port.onmessage = (event) => {
    chunks.push(event.data);
    length += event.data.length;
    if (length >= frame) flush();
  };
  context.createMediaStreamSource(stream).connect(node);
  node.connect(context.destination); // pulls the graph; the node's output is silence
  microphone = { stream, context, node, session, flush };
  session.closed.then(() => {
    if (microphone && microphone.session === session) stopMicrophone();
  });
}

async function stopMicrophone() {
  const running = microphone;
  if (!running) return;
  microphone = null;
  running.node.port.onmessage = null;
  running.flush();
  for (const track of running.stream.getTracks()) track.stop();
  await running.context.close();
  setStatus("Finishing…", "finishing");
  await running.session.finish();
  ui.mic.textContent = "Start the microphone";
  ui.mic.classList.remove("recording");
  setBusy(false);
  if (ui.status.dataset.state !== "error") setStatus("Done.", "done");
}

// The hot-word box is checked before anything starts, so that a typo costs no microphone permission.
function hotwordsValid() {
  try {
    parseHotwords(ui.hotwords.value);
    return true;
  } catch (error) {
    setStatus(error.message, "error");
    return false;
  }
}

ui.mic.addEventListener("click", async () => {
  if (microphone) return stopMicrophone();
  if (!hotwordsValid()) return;
  clearTranscript();
  setBusy(true);
  setStatus("Connecting…", "connecting");
  try {
    await startMicrophone();
  } catch (error) {
    setBusy(false);
    return setStatus(`Microphone: ${error.message}`, "error");
  }
  ui.mic.textContent = "Stop";
  ui.mic.classList.add("recording");
  setStatus("Listening… press Stop when you are done.", "listening");
});

function mixdown(buffer) {
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
  }
  return mono;
}

async function transcribeFile(file) {
  const rate = info.sample_rate;
  // Decoding in an offline context at the model's rate resamples there: a 16 kHz WAV arrives unchanged.
  const decoded = await new OfflineAudioContext(1, 1, rate).decodeAudioData(await file.arrayBuffer());
  const samples = mixdown(decoded);
  const session = await Session.open(rate);
  const frame = Math.round(rate * FILE_FRAME_SECONDS);
  for (let at = 0; at < samples.length && session.open; at += frame) {
    const percent = Math.round((100 * at) / samples.length);
    setStatus(`Transcribing ${file.name}… ${percent} %`, "streaming");
    await session.request(samples.subarray(at, at + frame));
  }
  setStatus("Finishing…", "finishing");
  await session.finish();
}

ui.file.addEventListener("change", async () => {
  const file = ui.file.files[0];
  if (!file || microphone || !hotwordsValid()) return;
  clearTranscript();
  setBusy(true);
  ui.mic.disabled = true;
  try {
    await transcribeFile(file);
    if (ui.status.dataset.state !== "error") setStatus(`Done: ${file.name}.`, "done");
  } catch (error) {
    setStatus(`${file.name}: ${error.message}`, "error");
  } finally {
    ui.file.value = "";
    ui.mic.disabled = false;
    setBusy(false);
  }
});

fetch("info")
  .then((response) => response.json())
  .then((served) => {
    info = served;
    ui.itn.checked = served.itn;
    ui.model.textContent = `${served.model} · ${served.decoding}`;
  })
  .catch(() => {
    ui.model.textContent = "server not reachable";
  });
