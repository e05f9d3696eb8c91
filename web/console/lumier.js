// The Lumier viewer: the VM's screen on port 8006. Its status shows while the VM is
// being pulled and started; then noVNC connects with the password from the URL
// (Lumier's `vnc.html?password=...&autoconnect=true`), which the viewer checks.
import RFB from "/assets/vendor/novnc/core/rfb.js";

const params = new URLSearchParams(window.location.search);
const password = params.get("password") || "";
const autoconnect = params.get("autoconnect") !== "false";
const statusEl = document.getElementById("status");

function show(text, state) {
  statusEl.textContent = text;
  statusEl.className = `status ${state || ""}`;
}

let rfb = null;
function connect() {
  const target = document.getElementById("screen");
  target.replaceChildren();
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  rfb = new RFB(target, `${proto}//${window.location.host}/websockify`, { credentials: { password }, shared: true });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => { show("connected", "connected"); document.body.dataset.screen = "connected"; });
  rfb.addEventListener("securityfailure", (e) => show(`the password was refused: ${e.detail.reason || ""}`, "failed"));
  rfb.addEventListener("credentialsrequired", () => show("this viewer needs the password from Lumier's URL", "failed"));
  rfb.addEventListener("disconnect", () => {
    document.body.dataset.screen = "disconnected";
    if (statusEl.textContent === "connected") show("disconnected", "failed");
  });
  window.cabinRfb = rfb;
}

document.getElementById("cad").onclick = () => rfb && rfb.sendCtrlAltDel();

async function poll() {
  try {
    const s = await (await fetch("/status")).json();
    if (s.error) { show(s.error, "failed"); return; }
    if (!s.ready) { show(s.stage || "starting", ""); setTimeout(poll, 1000); return; }
    show("connecting", "");
    if (autoconnect) connect();
  } catch (_) {
    show("the viewer is not answering", "failed");
    setTimeout(poll, 2000);
  }
}
poll();
