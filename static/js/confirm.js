// Forms with data-confirm="question" ask before they submit (in place of inline onsubmit handlers, which
// the Content-Security-Policy does not run).
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.target instanceof HTMLFormElement ? event.target.dataset.confirm : undefined;
  if (question !== undefined && !window.confirm(question)) {
    event.preventDefault();
  }
});
