// Drives dsita serve's page in headless Chromium (Debian's, through playwright-core) and prints what a person
// would read on it, as JSON: the transcript, the partials seen on the way, the word table and the status,
// with the text messages the page sent; the audio frames it sent go to OUT.pcm, one after another.
//   node page_check.cjs URL (mic|file) WAV SECONDS OUT.pcm [SCREENSHOT.png]
// mic: the WAV plays once through Chromium's fake microphone; file: the WAV is picked in the file input.
// NODE_PATH must reach playwright-core (tools/setup_node.sh installs it in .cache/node/node_modules).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, mode, wav, seconds, sentPcm, screenshot] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
  `--use-file-for-fake-audio-capture=${wav}%noloop`,
];

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "dsita-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1100, height: 760 },
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const console = [];
    page.on("console", (message) => console.push(`${message.type()}: ${message.text()}`));
    page.on("pageerror", (error) => console.push(`pageerror: ${error.message}`));
    const sentText = [];
    const sentAudio = [];
    page.on("websocket", (socket) => {
      socket.on("framesent", ({ payload }) => {
        if (typeof payload === "string") sentText.push(payload);
        else sentAudio.push(payload);
      });
    });
    await page.goto(url);
    await page.waitForFunction(() => !document.getElementById("model").textContent.includes("connecting"));
    await page.evaluate(() => {
      window.partialsSeen = [];
      const partial = document.getElementById("partial");
      new MutationObserver(() => {
        if (partial.textContent) window.partialsSeen.push(partial.textContent);
      }).observe(partial, { childList: true, characterData: true, subtree: true });
    });
    const finished = () => ["done", "error"].includes(document.getElementById("status").dataset.state);
    if (mode === "mic") {
      await page.click("#mic");
      await page.waitForFunction(() => document.getElementById("status").dataset.state !== "connecting");
      await page.waitForTimeout(Number(seconds) * 1000 + 1500); // the fake microphone plays the file once
      await page.click("#mic");
    } else {
      await page.setInputFiles("#file", wav);
    }
    await page.waitForFunction(finished, null, { timeout: 120000 });
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    fs.writeFileSync(sentPcm, Buffer.concat(sentAudio));
    const result = await page.evaluate(() => ({
      final: document.getElementById("final").textContent,
      partials: window.partialsSeen,
      rows: [...document.querySelectorAll("#words tbody tr")].map((row) =>
        [...row.cells].map((cell) => cell.textContent)),
      status: document.getElementById("status").textContent,
      state: document.getElementById("status").dataset.state,
    }));
    process.stdout.write(JSON.stringify({ ...result, sent: sentText, console }) + "\n");
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
