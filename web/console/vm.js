// A VM's page: its screen (noVNC over the console's websocket; cabin logs in to the
// VNC server, the page never sees the password) and its serial console (xterm.js).
import RFB from "/assets/vendor/novnc/core/rfb.js";
import { api, forgetToken, notice, openTerminal, whyRefused, wsUrl } from "/assets/console/common.js";

forgetToken();
const name = decodeURIComponent(window.location.pathname.replace(/^\/vm\//, ""));
document.getElementById("name").textContent = name;
document.title = `cabin: ${name}`;
const enc = encodeURIComponent(name);
// The VM's storage location (from the dashboard's link), passed on to every request.
const storage = new URLSearchParams(window.location.search).get("storage");
const q = storage ? `?storage=${encodeURIComponent(storage)}` : "";

function setStatus(id, text, state) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = `status ${state || ""}`;
}

let rfb = null;
function connectScreen() {
  const target = document.getElementById("screen");
  target.replaceChildren();
  rfb = new RFB(target, wsUrl(`/ws/vm/${enc}/screen${q}`), { shared: true });
  rfb.scaleViewport = document.getElementById("scale").checked;
  rfb.focusOnClick = true;
  rfb.addEventListener("connect", () => {
    setStatus("screen-status", "connected", "connected");
    document.body.dataset.screen = "connected";
  });
  rfb.addEventListener("disconnect", async (e) => {
    document.body.dataset.screen = "disconnected";
    const why = e.detail.clean ? "disconnected" : await whyRefused(`/ws/vm/${enc}/screen${q}`);
    setStatus("screen-status", why, "failed");
  });
  window.cabinRfb = rfb;
}

document.getElementById("scale").onchange = (e) => { if (rfb) rfb.scaleViewport = e.target.checked; };
document.getElementById("cad").onclick = () => rfb && rfb.sendCtrlAltDel();

// Typed paste: each character as the keys a US keyboard presses for it (the key's
// code, with Shift where the character needs it), so that the guest's own layout
// turns them back into text; characters no key makes are skipped.
const SHIFTED = { "!": "Digit1", "@": "Digit2", "#": "Digit3", "$": "Digit4", "%": "Digit5",
  "^": "Digit6", "&": "Digit7", "*": "Digit8", "(": "Digit9", ")": "Digit0", "_": "Minus",
  "+": "Equal", "{": "BracketLeft", "}": "BracketRight", "|": "Backslash", ":": "Semicolon",
  '"': "Quote", "~": "Backquote", "<": "Comma", ">": "Period", "?": "Slash" };
const PLAIN = { "-": "Minus", "=": "Equal", "[": "BracketLeft", "]": "BracketRight",
  "\\": "Backslash", ";": "Semicolon", "'": "Quote", "`": "Backquote", ",": "Comma",
  ".": "Period", "/": "Slash", " ": "Space", "\n": "Enter", "\t": "Tab" };
const SPECIAL = { Enter: 0xff0d, Tab: 0xff09 };
function keyFor(ch) {
  if (/^[a-z]$/.test(ch)) return { code: `Key${ch.toUpperCase()}`, shift: false };
  if (/^[A-Z]$/.test(ch)) return { code: `Key${ch}`, shift: true };
  if (/^[0-9]$/.test(ch)) return { code: `Digit${ch}`, shift: false };
  if (SHIFTED[ch]) return { code: SHIFTED[ch], shift: true };
  if (PLAIN[ch]) return { code: PLAIN[ch], shift: false };
  return null;
}
async function typeText(text) {
  for (const ch of text.replace(/\r\n?/g, "\n")) {
    const key = keyFor(ch);
    if (!key) continue;
    const keysym = SPECIAL[key.code] || ch.codePointAt(0);
    if (key.shift) rfb.sendKey(0xffe1, "ShiftLeft", true);
    rfb.sendKey(keysym, key.code, true);
    rfb.sendKey(keysym, key.code, false);
    if (key.shift) rfb.sendKey(0xffe1, "ShiftLeft", false);
    await new Promise((r) => setTimeout(r, 15));
  }
}
const dialog = document.getElementById("paste-dialog");
document.getElementById("paste").onclick = () => dialog.showModal();
dialog.addEventListener("close", () => {
  if (dialog.returnValue === "type" && rfb) typeText(document.getElementById("paste-text").value);
});
window.cabinTypeText = (text) => typeText(text);

async function loadState() {
  try {
    const s = await api("GET", "/api/state");
    const vm = s.vms.find((v) => v.name === name && (!storage || v.locationName === storage));
    const state = vm ? vm.status : "not found";
    const el = document.getElementById("state");
    el.textContent = state;
    el.className = `state ${state}`;
    const power = document.getElementById("power");
    power.textContent = state === "running" ? "Stop" : "Start";
    power.onclick = async () => {
      power.disabled = true;
      try {
        await api("POST", `/api/vms/${enc}/${state === "running" ? "stop" : "start"}${q}`);
        if (state !== "running") setTimeout(() => { connectScreen(); connectSerial(); }, 500);
      } catch (e) { notice(e.message); }
      power.disabled = false;
      loadState();
    };
    return vm;
  } catch (e) {
    notice(e.message);
    return null;
  }
}

let serial = null;
function connectSerial() {
  if (serial) serial.close();
  const el = document.getElementById("serial");
  el.replaceChildren();
  serial = openTerminal(el, `/ws/vm/${enc}/serial${q}`, {
    onStatus: async (text, state) => {
      if (state === "failed") text = await whyRefused(`/ws/vm/${enc}/serial${q}`);
      setStatus("serial-status", text, state);
      document.body.dataset.serial = state;
    },
  });
  window.cabinSerial = serial.term;
}

loadState().then((vm) => {
  if (vm && vm.status === "running") {
    connectScreen();
    connectSerial();
  } else {
    setStatus("screen-status", "the VM is not running", "");
    setStatus("serial-status", "the VM is not running", "");
  }
});
setInterval(loadState, 5000);
