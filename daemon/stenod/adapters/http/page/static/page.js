// stenod's page works without this file; with it, lists and jobs update live, a click on a
// segment plays the recording from there, the transcript can be searched, and files can
// be dropped on the upload form.
"use strict";

function live(container) {
  // Re-render the container's HTML from data-live whenever data-events reports a change.
  const url = container.dataset.live, events = container.dataset.events;
  if (!url || !events || !window.EventSource) return;
  // One fetch at a time; a change reported during a fetch fetches again after it, so the
  // last change (the job's end) is never lost behind an earlier one's answer.
  let pending = false, again = false;
  const refresh = async () => {
    if (pending) { again = true; return; }
    pending = true;
    try {
      const answer = await fetch(url, { credentials: "same-origin" });
      if (answer.ok) {
        const target = container.tagName === "TABLE" ? container.querySelector("tbody") : container;
        target.innerHTML = await answer.text();
      }
    } finally {
      pending = false;
      if (again) { again = false; refresh(); }
    }
  };
  const source = new EventSource(events, { withCredentials: true });
  source.onmessage = refresh;
  source.addEventListener("change", refresh);
  for (const kind of ["accepted", "submitted", "progress"]) {
    source.addEventListener("stenod.job." + kind, refresh);
  }
  for (const kind of ["succeeded", "partial", "failed", "cancelled"]) {
    // The job's last event: nothing more will come, so no reconnecting either.
    source.addEventListener("stenod.job." + kind, () => { source.close(); refresh(); });
  }
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) refresh(); };
}

function transcript() {
  const audio = document.getElementById("audio");
  const segments = Array.from(document.querySelectorAll(".segment"));
  document.querySelectorAll(".seek").forEach((button) => {
    button.addEventListener("click", () => {
      if (!audio) return;
      audio.currentTime = parseFloat(button.dataset.start);
      audio.play().catch(() => {});  // autoplay rules may refuse; the position is set anyway
    });
  });
  if (audio) {
    audio.addEventListener("timeupdate", () => {
      const now = audio.currentTime;
      segments.forEach((s) => s.classList.toggle("playing",
        now >= parseFloat(s.dataset.start) && now < parseFloat(s.dataset.end)));
    });
  }
  const search = document.getElementById("search");
  if (!search) return;
  search.addEventListener("input", () => {
    const words = search.value.trim().toLowerCase();
    segments.forEach((s) => {
      const text = s.querySelector(".text");
      if (!text) return;
      const plain = text.textContent;
      text.textContent = plain;  // drop earlier marks; textContent keeps any markup inert
      const found = !words || plain.toLowerCase().includes(words);
      s.classList.toggle("hidden", !found);
      if (words && found) {
        const at = plain.toLowerCase().indexOf(words);
        const mark = document.createElement("mark");
        mark.textContent = plain.slice(at, at + words.length);
        text.textContent = "";
        text.append(plain.slice(0, at), mark, plain.slice(at + words.length));
      }
    });
  });
}

function dropZone() {
  const zone = document.getElementById("drop"), input = document.getElementById("file");
  if (!zone || !input) return;
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    input.files = e.dataTransfer.files;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(live);
  transcript();
  dropZone();
});
