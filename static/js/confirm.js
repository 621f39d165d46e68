// Forms with data-confirm="question" ask before they submit (in place of inline onsubmit handlers, which
// the Content-Security-Policy does not run); so do submit buttons with data-confirm, for the form they send.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target instanceof HTMLFormElement ? event.target : undefined;
  const button = event.submitter instanceof HTMLElement ? event.submitter : undefined;
  const question = button?.dataset.confirm ?? form?.dataset.confirm;
  if (question !== undefined && !window.confirm(question)) {
    event.preventDefault();
  }
});
