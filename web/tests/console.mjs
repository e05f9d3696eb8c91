// Drives cabin's web console in Debian's Chromium (headless, through playwright-core;
// nothing downloads a browser) for the Rust integration tests, which start the server
// and the VMs and check what this prints (one JSON line) against the host's truth.
//
//   node web/tests/console.mjs dashboard URL OUT
//   node web/tests/console.mjs vm URL NAME OUT
//   node web/tests/console.mjs container URL NAME OUT
//   node web/tests/console.mjs lumier VIEWER-URL OUT      (Lumier's printed URL)
//
// URL is the Console line `cabin serve` printed (with its token); OUT a directory for
// screenshots and the screen's pixels.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [mode, url, ...rest] = process.argv.slice(2);
const base = new URL(url.replace("://localhost:", "://127.0.0.1:"));
const token = base.searchParams.get("token");
const origin = base.origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
page.on("response", (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url().replace(/token=[^&]*/, "token=...")}`); });

// The text a terminal shows (xterm.js keeps it in its buffer, not the DOM).
async function terminalText(handle) {
  return page.evaluate((h) => {
    const t = window[h];
    if (!t) return "";
    const b = t.buffer.active;
    const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join("\n");
  }, handle);
}

async function waitForText(handle, needle, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const text = await terminalText(handle);
    if (text.includes(needle)) return text;
    if (Date.now() > deadline) throw new Error(`${handle} never showed ${JSON.stringify(needle)}; it shows:\n${text.slice(-2000)}`);
    await page.waitForTimeout(250);
  }
}

// Opens `address` and waits with `ready`. A load that failed with ERR_NETWORK_CHANGED
// is opened again (at most twice): Chromium cancels requests when any interface of the
// host changes address, which other tests' VMs and bridges do; any other failure stands.
async function openPage(address, ready) {
  for (let attempt = 1; ; attempt++) {
    const response = await page.goto(address);
    try {
      await ready();
      return response;
    } catch (e) {
      const changed = problems.filter((p) => p.includes("ERR_NETWORK_CHANGED"));
      if (changed.length === 0 || attempt >= 3) throw e;
      for (const p of changed) problems.splice(problems.indexOf(p), 1);
    }
  }
}

async function typeInto(handle, text) {
  await page.evaluate(([h, t]) => window[h].focus(), [handle, text]);
  await page.keyboard.type(text, { delay: 20 });
}

const result = { mode };
try {
  if (mode === "dashboard") {
    const [out] = rest;
    mkdirSync(out, { recursive: true });
    const response = await openPage(url, () => page.waitForSelector("body[data-ready='1']", { timeout: 20000 }));
    result.status = response.status();
    result.vms = await page.$$eval("td[data-vm]", (tds) => tds.map((t) => t.dataset.vm));
    result.containers = await page.$$eval("td[data-container]", (tds) => tds.map((t) => t.dataset.container));
    result.address = page.url();
    result.rows = await page.$$eval("tbody tr", (rows) => rows.map((r) => r.innerText.replace(/\s+/g, " ").trim()));
    await page.screenshot({ path: join(out, "console-dashboard.png") });
  } else if (mode === "vm") {
    const [name, out] = rest;
    mkdirSync(out, { recursive: true });
    await openPage(`${origin}/vm/${encodeURIComponent(name)}?token=${token}`,
      () => page.waitForSelector("body[data-screen='connected']", { timeout: 30000 }));
    await page.waitForSelector("body[data-serial='connected']", { timeout: 30000 });
    // The serial console: a shell on ttyS0 answers what is typed in the page.
    await page.waitForTimeout(500);
    await typeInto("cabinSerial", "\r");
    await typeInto("cabinSerial", "echo serial-$((6*7))\r");
    await waitForText("cabinSerial", "serial-42", 60000);
    result.serial = "serial-42";
    // Keys typed into the screen (the page's typed paste, Shift and all) reach the
    // shell on tty1, which writes to the serial console where the page reads it.
    await page.evaluate(() => window.cabinTypeText("echo typed-$((6*7))-ON-SCREEN > /dev/ttyS0\n"));
    await waitForText("cabinSerial", "typed-42-ON-SCREEN", 60000);
    result.typed = "typed-42-ON-SCREEN";
    await page.waitForTimeout(1000);
    // The screen's pixels, as the canvas holds them.
    const shot = await page.evaluate(() => {
      const c = document.querySelector("#screen canvas");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height);
      let s = "";
      for (let i = 0; i < d.data.length; i += 1) s += String.fromCharCode(d.data[i]);
      return { width: c.width, height: c.height, rgba: btoa(s) };
    });
    result.width = shot.width;
    result.height = shot.height;
    writeFileSync(join(out, "console-canvas.rgba"), Buffer.from(shot.rgba, "base64"));
    await page.screenshot({ path: join(out, "console-vm.png") });
  } else if (mode === "container") {
    const [name, out] = rest;
    mkdirSync(out, { recursive: true });
    await openPage(`${origin}/container/${encodeURIComponent(name)}?token=${token}`,
      () => page.waitForSelector("body[data-shell='connected']", { timeout: 30000 }));
    await page.waitForSelector("body[data-logs='connected']", { timeout: 30000 });
    await typeInto("cabin_shell", "echo shell-$((6*7)) $(hostname)\r");
    result.shell = await waitForText("cabin_shell", "shell-42", 30000);
    await typeInto("cabin_shell", "stty size\r");
    await page.waitForTimeout(1000);
    result.shell = await terminalText("cabin_shell");
    result.logs = await terminalText("cabin_logs");
    result.size = await page.evaluate(() => [window.cabin_shell.rows, window.cabin_shell.cols]);
    await page.screenshot({ path: join(out, "console-container.png") });
  } else if (mode === "lumier") {
    const [out] = rest;
    mkdirSync(out, { recursive: true });
    // A wrong password first: refused by the viewer.
    const wrong = new URL(base);
    wrong.searchParams.set("password", "wrong123");
    await openPage(wrong.toString(),
      () => page.waitForFunction(() => document.getElementById("status").textContent.includes("refused"), null, { timeout: 60000 }));
    result.wrong = await page.textContent("#status");
    problems.length = 0; // the refusal's console message was the point
    await openPage(base.toString(), () => page.waitForSelector("body[data-screen='connected']", { timeout: 60000 }));
    await page.waitForTimeout(2000);
    result.size = await page.evaluate(() => {
      const c = document.querySelector("#screen canvas");
      return [c.width, c.height];
    });
    result.lit = await page.evaluate(() => {
      const c = document.querySelector("#screen canvas");
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let lit = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) lit++;
      return lit;
    });
    await page.screenshot({ path: join(out, "lumier-viewer.png") });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} catch (e) {
  result.error = String(e.stack || e);
}
result.problems = problems;
await browser.close();
console.log(JSON.stringify(result));
process.exit(result.error ? 1 : 0);
