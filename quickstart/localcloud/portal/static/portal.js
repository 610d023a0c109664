// The local cloud portal's live parts: a running job's log tail and learning curve (polled),
// and pages that refresh themselves. Text from the server is added as text, never as HTML.
"use strict";

const POLL_MS = 250;
const KEEP_CHARS = 512 * 1024; // of each log pane; older text is dropped from the page

function appendText(pre, text) {
  if (!text) return;
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  pre.appendChild(document.createTextNode(text));
  while (pre.childNodes.length > 1 && pre.textContent.length > KEEP_CHARS) pre.removeChild(pre.firstChild);
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function countEpochs(text) {
  return (text.match(/Finished Epoch\[/g) || []).length;
}

async function refreshCurve(jobId) {
  const response = await fetch("/portal/job/curve?id=" + encodeURIComponent(jobId), { credentials: "same-origin" });
  if (!response.ok) return;
  const fragment = new DOMParser().parseFromString(await response.text(), "text/html");
  document.getElementById("curve").replaceChildren(...fragment.body.childNodes);
}

function followJob(live) {
  const jobId = live.dataset.job;
  const offsets = { "stdout.txt": live.dataset.stdout, "stderr.txt": live.dataset.stderr };
  const panes = { "stdout.txt": document.getElementById("stdout"), "stderr.txt": document.getElementById("stderr") };
  let epochs = Number(live.dataset.epochs);
  let seen = 0;
  for (const pane of Object.values(panes)) pane.scrollTop = pane.scrollHeight;
  async function poll() {
    try {
      const query = new URLSearchParams({ id: jobId, ...offsets });
      const response = await fetch("/portal/job/log?" + query, { credentials: "same-origin" });
      if (response.ok) {
        const body = await response.json();
        for (const name of Object.keys(panes)) {
          appendText(panes[name], body[name].text);
          offsets[name] = body[name].offset;
          seen += countEpochs(body[name].text);
        }
        if (seen) { epochs += seen; seen = 0; await refreshCurve(jobId); }
        if (body.state !== live.dataset.state) { window.location.reload(); return; }
      }
    } catch (err) {
      // the local cloud is restarting or gone: keep trying, quietly
    }
    setTimeout(poll, POLL_MS);
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live && live.dataset.live === "yes") followJob(live);
  const refresh = document.querySelector("[data-refresh]");
  if (refresh) setTimeout(() => window.location.reload(), Number(refresh.dataset.refresh) * 1000);
});
