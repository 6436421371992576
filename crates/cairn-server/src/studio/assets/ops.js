// Endpoint operations in the studio: reveal and copy keys, confirm key regeneration, and send the
// test form without leaving the page. The page never contains a key: "Reveal" and "Copy" fetch
// them from the keys API with the session cookie (a GET, so no CSRF header is needed) and keep
// them only in the DOM node the user asked to see.
(function () {
  'use strict';

  var MASK = '••••••••••••';

  function keysSection() {
    return document.getElementById('keys');
  }

  function showKeyError(message) {
    var el = document.getElementById('key-error');
    if (!el) return;
    el.textContent = message;
    el.hidden = !message;
  }

  // Both keys, fetched once per press: a regenerated key must never be served from memory.
  function fetchKeys() {
    var section = keysSection();
    var url = section && section.getAttribute('data-keys-url');
    if (!url) return Promise.reject(new Error('this page has no keys'));
    return fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) {
            var msg = body && body.error && body.error.message ? body.error.message : 'HTTP ' + r.status;
            throw new Error(msg);
          }
          return body;
        });
      });
  }

  function keyOf(keys, slot) {
    return slot === 'secondary' ? keys.secondary_key : keys.primary_key;
  }

  function setRevealed(slot, value) {
    var code = document.getElementById(slot + '-key');
    var button = document.getElementById('reveal-' + slot);
    if (!code || !button) return;
    if (value === null) {
      code.textContent = MASK;
      code.removeAttribute('data-revealed');
      button.textContent = 'Reveal';
      button.setAttribute('aria-pressed', 'false');
    } else {
      code.textContent = value;
      code.setAttribute('data-revealed', 'true');
      button.textContent = 'Hide';
      button.setAttribute('aria-pressed', 'true');
    }
  }

  function onReveal(button) {
    var slot = button.getAttribute('data-slot');
    var code = document.getElementById(slot + '-key');
    if (code && code.hasAttribute('data-revealed')) {
      setRevealed(slot, null);
      return;
    }
    button.disabled = true;
    fetchKeys()
      .then(function (keys) { showKeyError(''); setRevealed(slot, keyOf(keys, slot)); })
      .catch(function (e) { showKeyError('Cannot read the keys: ' + e.message); })
      .then(function () { button.disabled = false; });
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain http on another host has no clipboard API: copy through a hidden text area.
    return new Promise(function (resolve, reject) {
      var area = document.createElement('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.style.position = 'fixed';
      area.style.opacity = '0';
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error('the browser refused to copy')); }
    });
  }

  function onCopy(button) {
    var slot = button.getAttribute('data-slot');
    button.disabled = true;
    fetchKeys()
      .then(function (keys) { return copyText(keyOf(keys, slot)); })
      .then(function () {
        showKeyError('');
        button.textContent = 'Copied';
        setTimeout(function () { button.textContent = 'Copy'; }, 1500);
      })
      .catch(function (e) { showKeyError('Cannot copy the key: ' + e.message); })
      .then(function () { button.disabled = false; });
  }

  // The test form: post it as the form would, then take the response out of the page that comes
  // back (the same server-rendered markup a browser without scripts shows).
  function onTestSubmit(event) {
    var form = event.target;
    var status = document.getElementById('test-status');
    var pre = document.getElementById('test-response');
    var send = document.getElementById('test-send');
    if (!status || !pre || !window.fetch || !window.DOMParser) return;
    event.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    send.disabled = true;
    status.textContent = 'Sending…';
    pre.textContent = '';
    fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: body.toString()
    })
      .then(function (r) {
        return r.text().then(function (html) { return { r: r, html: html }; });
      })
      .then(function (x) {
        var doc = new DOMParser().parseFromString(x.html, 'text/html');
        var gotStatus = doc.getElementById('test-status');
        var gotPre = doc.getElementById('test-response');
        if (x.r.ok && gotStatus && gotPre) {
          status.textContent = gotStatus.textContent;
          pre.textContent = gotPre.textContent;
        } else {
          // An error page (403, 404, …): say what it says.
          var h1 = doc.querySelector('main h1');
          var p = doc.querySelector('main p.error') || doc.querySelector('main p');
          status.textContent = 'The studio refused the test: HTTP ' + x.r.status + (h1 ? ' ' + h1.textContent : '');
          pre.textContent = p ? p.textContent : '';
        }
      })
      .catch(function (e) {
        status.textContent = 'The request failed: ' + e.message;
      })
      .then(function () { send.disabled = false; });
  }

  document.addEventListener('click', function (event) {
    var t = event.target;
    if (!(t instanceof Element)) return;
    var reveal = t.closest('button.reveal');
    if (reveal) { onReveal(reveal); return; }
    var copy = t.closest('button.copy');
    if (copy) { onCopy(copy); }
  });

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.classList.contains('regenerate')) {
      if (!window.confirm(form.getAttribute('data-confirm') || 'Regenerate this key?')) {
        event.preventDefault();
      }
      return;
    }
    if (form.id === 'test-form') onTestSubmit(event);
  });
})();
