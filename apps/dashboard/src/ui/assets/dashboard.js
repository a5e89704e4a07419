// Small behaviours of the dashboard's pages (no inline scripts: the pages' CSP forbids them).
(function () {
  'use strict';
  // Forms with data-confirm ask before they act (cancel, retry, redrive).
  document.addEventListener('submit', function (e) {
    var form = e.target;
    var question = form && form.getAttribute && form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) e.preventDefault();
  });
})();
