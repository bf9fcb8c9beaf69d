/*!
 * Care-by-Design web chat widget. Self-contained, no dependencies.
 *
 * Embed with one tag on any page:
 *   <script src="https://chat.example.com/widget.js" data-key="pk_..." async></script>
 * Optional attributes: data-customer-id (your signed-in user's id), data-customer-hash (the
 * HMAC-SHA256 of that id under your identity secret, computed by your server), data-title,
 * data-mode="page" (the chat fills the page, always open: the chat page at `/` is this).
 *
 * Protocol (WebSocket /v1/conversations/{conversation_id}/ws): every frame the server sends to
 * the conversation has an `id`; the widget reconnects with `after=<last id seen>` and the
 * server replays what it missed, then sends `resumed`. Messages carry a client_message_id and
 * are resent until `accepted`, so a dropped connection neither loses nor doubles them.
 */
(function () {
  'use strict';

  if (window.__cbdWidget) return; // the tag was included twice

  var script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  if (!script || !script.src) return;

  // ---- configuration -----------------------------------------------------------------------

  var IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;
  var MAX_LEN = 4000;
  var MAX_COMMENT = 2000;
  var BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  var TYPING_TIMEOUT_MS = 90000;
  var MAX_RESENDS = 5;
  var CONVERSATION_IDLE_MS = 24 * 3600 * 1000;
  var SEEN_MEMORY = 2000;
  var VISITOR_KEY = 'cbd.widget.visitor';
  var CONVERSATION_KEY = 'cbd.widget.conversation';
  var OPEN_KEY = 'cbd.widget.open';

  var src = new URL(script.src, location.href);
  // The ingest base URL is wherever this script came from (a path prefix is kept).
  var basePath = src.pathname.replace(/\/widget\.js$/, '');
  var wsBase = (src.protocol === 'https:' ? 'wss://' : 'ws://') + src.host + basePath;
  var data = script.dataset || {};
  var widgetKey = data.key || '';
  var customerHash = data.customerHash || '';
  var title = data.title || 'Chat with us';
  var pageMode = data.mode === 'page';

  // ---- ids & storage -----------------------------------------------------------------------

  function randomHex(chars) {
    var bytes = new Uint8Array(Math.ceil(chars / 2));
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.prototype.map.call(bytes, function (b) {
      return ('0' + b.toString(16)).slice(-2);
    }).join('').slice(0, chars);
  }
  var memoryStore = {};
  function storageGet(store, key) {
    try { return store.getItem(key); } catch (_) { return memoryStore[key] || null; }
  }
  function storageSet(store, key, value) {
    // Private mode or blocked storage: keep it for this page only.
    try { store.setItem(key, value); } catch (_) { memoryStore[key] = value; }
  }

  function loadCustomerId() {
    var given = data.customerId || '';
    if (given && IDENTIFIER.test(given)) return given;
    if (given) console.warn('[care-by-design] data-customer-id is not a valid id; chatting anonymously');
    var id = storageGet(window.localStorage, VISITOR_KEY);
    if (!id || !IDENTIFIER.test(id)) {
      id = 'web-' + randomHex(20);
      storageSet(window.localStorage, VISITOR_KEY, id);
    }
    return id;
  }
  var customerId = loadCustomerId();
  if (customerId !== data.customerId) customerHash = ''; // a hash only vouches for its own id

  function storedConversation() {
    try {
      var c = JSON.parse(storageGet(window.localStorage, CONVERSATION_KEY) || 'null');
      if (c && c.id && IDENTIFIER.test(c.id) && c.customerId === customerId && !c.ended
          && Date.now() - (c.updatedAt || 0) < CONVERSATION_IDLE_MS) return c;
    } catch (_) { /* unreadable: start afresh */ }
    return null;
  }
  function saveConversation(extra) {
    var record = { id: conversationId, customerId: customerId, updatedAt: Date.now() };
    if (extra) for (var k in extra) record[k] = extra[k];
    storageSet(window.localStorage, CONVERSATION_KEY, JSON.stringify(record));
  }
  var stored = storedConversation();
  var conversationId = stored ? stored.id : 'conv-' + randomHex(16);
  var hadConversation = !!stored;

  // ---- DOM (in a shadow root, so the host page's styles neither leak in nor out) ---------

  var CSS = [
    ':host { all: initial; position: fixed !important; right: 20px; bottom: 20px;',
    '  z-index: 2147483000; color-scheme: light dark;',
    '  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;',
    '  --bg: #faf6f0; --surface: #ffffff; --muted-bg: #f3ece3; --border: #d9ccbd; --text: #2b2420;',
    '  --muted: #5e5249; --accent: #9a3f1c; --accent-hover: #833417; --on-accent: #ffffff;',
    '  --agent: #0f5e57; --error: #b42318; --ok: #1e7a4c; --warn: #8a5a00; --focus: #0f5e57; }',
    '@media (prefers-color-scheme: dark) { :host { --bg: #1c1816; --surface: #26211e;',
    '  --muted-bg: #2f2926; --border: #4a413c; --text: #f3ece6; --muted: #c4b8ae; --accent: #8e3a1a;',
    '  --accent-hover: #a2441f; --on-accent: #f3ece6; --agent: #7dd3c0; --error: #ff9b8a;',
    '  --ok: #7dd3a0; --warn: #f0c36a; --focus: #7dd3c0; } }',
    '*, *::before, *::after { box-sizing: border-box; }',
    '[hidden] { display: none !important; }',
    ':focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }',
    '.sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0;',
    '  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }',
    'button { font: inherit; cursor: pointer; }',
    '.launcher { position: relative; width: 60px; height: 60px; border-radius: 50%; border: 0;',
    '  background: var(--accent); color: var(--on-accent); display: grid; place-items: center;',
    '  box-shadow: 0 4px 14px rgba(0,0,0,.25); margin-left: auto; }',
    '.launcher:hover { background: var(--accent-hover); }',
    '.launcher svg { width: 28px; height: 28px; }',
    '.badge { position: absolute; top: -2px; right: -2px; min-width: 20px; height: 20px;',
    '  border-radius: 10px; background: var(--error); color: #fff; font-size: 12px;',
    '  font-weight: 700; display: grid; place-items: center; padding: 0 5px; }',
    '.panel { position: absolute; right: 0; bottom: 76px; width: 380px;',
    '  height: min(600px, calc(100vh - 110px)); display: flex; flex-direction: column;',
    '  background: var(--bg); color: var(--text); border: 1px solid var(--border);',
    '  border-radius: 16px; overflow: hidden; box-shadow: 0 12px 40px rgba(0,0,0,.28); }',
    '@media (max-width: 440px) { :host { right: 8px; bottom: 8px; }',
    '  .panel { position: fixed; inset: 8px 8px 80px 8px; width: auto; height: auto; } }',
    '.head { display: flex; align-items: center; gap: 8px; padding: 10px 12px;',
    '  background: var(--surface); border-bottom: 1px solid var(--border); }',
    '.head-text { flex: 1; min-width: 0; }',
    '.head h2 { margin: 0; font-size: 16px; font-weight: 650; line-height: 1.3; }',
    '.status { margin: 0; font-size: 12.5px; color: var(--muted); display: flex;',
    '  align-items: center; gap: 6px; }',
    '.status::before { content: ""; width: 8px; height: 8px; border-radius: 50%;',
    '  background: var(--warn); }',
    '.status[data-state="connected"]::before { background: var(--ok); }',
    '.status[data-state="error"]::before { background: var(--error); }',
    '.btn { border: 1px solid var(--border); background: var(--surface); color: var(--text);',
    '  border-radius: 999px; padding: 6px 12px; min-height: 36px; font-size: 13.5px; font-weight: 550; }',
    '.btn:hover { background: var(--muted-bg); }',
    '.btn-icon { width: 36px; padding: 0; display: grid; place-items: center; }',
    '.btn-icon svg { width: 16px; height: 16px; }',
    '.btn-primary { background: var(--accent); color: var(--on-accent); border-color: transparent;',
    '  border-radius: 12px; padding: 0 16px; min-height: 42px; font-weight: 650; }',
    '.btn-primary:hover { background: var(--accent-hover); }',
    '.log { flex: 1; min-height: 0; overflow-y: auto; padding: 12px; display: flex;',
    '  flex-direction: column; gap: 8px; overscroll-behavior: contain; }',
    '.empty { margin: auto; text-align: center; color: var(--muted); padding: 16px; }',
    '.msg { max-width: 85%; padding: 8px 12px; border-radius: 14px; overflow-wrap: anywhere; }',
    '.msg-text { white-space: pre-wrap; }',
    '.msg-meta { font-size: 11.5px; margin-top: 2px; opacity: .9; }',
    '.msg-author { font-size: 11.5px; font-weight: 700; color: var(--agent); }',
    '.msg-customer { align-self: flex-end; background: var(--accent); color: var(--on-accent);',
    '  border-bottom-right-radius: 4px; }',
    '.msg-customer[data-state="failed"] { outline: 2px solid var(--error); outline-offset: 2px; }',
    '.retry { background: none; border: 0; color: inherit; text-decoration: underline;',
    '  font-size: 11.5px; font-weight: 700; padding: 2px 4px; }',
    '.msg-bot, .msg-agent { align-self: flex-start; background: var(--surface);',
    '  border: 1px solid var(--border); border-bottom-left-radius: 4px; }',
    '.msg-agent { border-left: 4px solid var(--agent); }',
    '.msg-system { align-self: center; max-width: 92%; color: var(--muted); font-size: 13.5px;',
    '  text-align: center; border: 1px dashed var(--border); border-radius: 12px; }',
    '.msg.streaming .msg-text::after { content: ""; display: inline-block; width: .45em;',
    '  height: 1em; margin-left: 2px; vertical-align: text-bottom; background: currentColor;',
    '  opacity: .5; animation: caret 1s steps(2, start) infinite; }',
    '@keyframes caret { to { visibility: hidden; } }',
    '.typing { align-self: flex-start; display: inline-flex; gap: 4px; padding: 10px 14px;',
    '  margin: 0 12px 8px; background: var(--surface); border: 1px solid var(--border);',
    '  border-radius: 14px; border-bottom-left-radius: 4px; color: var(--muted); width: max-content; }',
    '.typing span { width: 7px; height: 7px; border-radius: 50%; background: currentColor;',
    '  animation: bounce 1.2s infinite ease-in-out; }',
    '.typing span:nth-child(2) { animation-delay: .15s; }',
    '.typing span:nth-child(3) { animation-delay: .3s; }',
    '@keyframes bounce { 0%, 60%, 100% { transform: none; opacity: .45; }',
    '  30% { transform: translateY(-4px); opacity: 1; } }',
    '@media (prefers-reduced-motion: reduce) { .typing span, .msg.streaming .msg-text::after {',
    '  animation: none; } }',
    'form { margin: 0; }',
    '.composer { padding: 8px 10px 10px; background: var(--surface); border-top: 1px solid var(--border); }',
    '.composer label, .rating label.field { display: block; font-size: 12.5px; color: var(--muted);',
    '  margin: 0 2px 4px; }',
    '.row { display: flex; gap: 8px; align-items: flex-end; }',
    'textarea { flex: 1; min-width: 0; font: inherit; color: var(--text); background: var(--bg);',
    '  border: 1px solid var(--border); border-radius: 12px; padding: 9px 11px; min-height: 42px;',
    '  max-height: 9rem; resize: none; }',
    '.hint { margin: 4px 2px 0; font-size: 12px; color: var(--muted); }',
    '.error { margin: 4px 2px 0; font-size: 12.5px; color: var(--error); font-weight: 600; }',
    '.error:empty { display: none; }',
    '.rating, .done { padding: 14px; background: var(--surface); border-top: 1px solid var(--border); }',
    '.rating h3, .done h3 { margin: 0 0 8px; font-size: 15px; }',
    '.scale { display: flex; gap: 6px; margin: 0 0 12px; }',
    '.scale label { flex: 1; position: relative; }',
    '.scale input { position: absolute; opacity: 0; inset: 0; width: 100%; height: 100%; margin: 0;',
    '  cursor: pointer; }',
    '.scale span { display: grid; place-items: center; min-height: 44px; border: 1px solid var(--border);',
    '  border-radius: 10px; font-weight: 700; font-size: 16px; background: var(--bg); }',
    '.scale small { display: block; text-align: center; font-size: 11px; color: var(--muted);',
    '  margin-top: 2px; }',
    '.scale input:checked + span { background: var(--accent); color: var(--on-accent);',
    '  border-color: var(--accent); }',
    '.scale input:focus-visible + span { outline: 3px solid var(--focus); outline-offset: 2px; }',
    '.rating textarea { width: 100%; min-height: 64px; }',
    '.actions { display: flex; gap: 8px; justify-content: flex-end; margin-top: 10px; flex-wrap: wrap; }',
    '.done p { margin: 0 0 10px; }',
    // Page mode: the chat is the page, always open, with no launcher and nothing to close.
    ':host([data-mode="page"]) { position: fixed !important; inset: 0; right: 0; bottom: 0; }',
    ':host([data-mode="page"]) .launcher, :host([data-mode="page"]) .close { display: none; }',
    ':host([data-mode="page"]) .panel { position: absolute; inset: 0; width: auto; height: auto;',
    '  max-width: 48rem; margin: 0 auto; border-radius: 0; border-width: 0 1px; box-shadow: none; }'
  ].join('\n');

  var ICON_CHAT = '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true" focusable="false">'
    + '<path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  var ICON_CLOSE = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.5"'
    + ' aria-hidden="true" focusable="false"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  var LABELS = ['Very poor', 'Poor', 'Okay', 'Good', 'Excellent'];

  var scale = LABELS.map(function (label, i) {
    var n = i + 1;
    return '<label><input type="radio" name="rating" value="' + n + '" aria-label="' + n + ' - '
      + label + '"><span aria-hidden="true">' + n + '</span><small aria-hidden="true">'
      + label + '</small></label>';
  }).join('');

  var HTML = ''
    + '<button type="button" class="launcher" part="launcher" aria-expanded="false"'
    + ' aria-controls="cbd-panel">' + ICON_CHAT
    + '<span class="badge" hidden aria-hidden="true"></span></button>'
    + '<section class="panel" id="cbd-panel" role="dialog" aria-modal="false"'
    + ' aria-labelledby="cbd-title" aria-describedby="cbd-status" hidden>'
    + '<div class="head"><div class="head-text"><h2 id="cbd-title"></h2>'
    + '<p class="status" id="cbd-status" role="status" data-state="idle">Not connected</p></div>'
    + '<button type="button" class="btn end">End chat</button>'
    + '<button type="button" class="btn btn-icon close" aria-label="Close chat">' + ICON_CLOSE + '</button></div>'
    + '<div class="log" role="log" aria-live="polite" aria-relevant="additions" aria-label="Conversation"'
    + ' tabindex="0"><p class="empty">Hi! Tell us what is going on and we will help. A person can'
    + ' join whenever you need one.</p></div>'
    + '<div class="typing" hidden aria-hidden="true"><span></span><span></span><span></span></div>'
    + '<div class="sr-only typing-status" role="status" aria-live="polite"></div>'
    + '<form class="composer" novalidate><label for="cbd-input">Your message</label>'
    + '<div class="row"><textarea id="cbd-input" rows="1" maxlength="' + MAX_LEN + '"'
    + ' autocomplete="off" placeholder="Type your message…" aria-describedby="cbd-hint cbd-error"></textarea>'
    + '<button type="submit" class="btn-primary send">Send</button></div>'
    + '<p class="hint" id="cbd-hint">Enter to send, Shift+Enter for a new line, Escape to close</p>'
    + '<p class="error" id="cbd-error" role="alert"></p></form>'
    + '<form class="rating" novalidate hidden aria-labelledby="cbd-rating-title">'
    + '<h3 id="cbd-rating-title">How did we do?</h3>'
    + '<div class="scale" role="radiogroup" aria-labelledby="cbd-rating-legend">'
    + '<span class="sr-only" id="cbd-rating-legend">Rate this chat from 1, very poor, to 5, excellent</span>'
    + scale + '</div>'
    + '<label class="field" for="cbd-comment">Anything you would like to add? (optional)</label>'
    + '<textarea id="cbd-comment" rows="3" maxlength="' + MAX_COMMENT + '"></textarea>'
    + '<p class="error" id="cbd-rating-error" role="alert"></p>'
    + '<div class="actions"><button type="button" class="btn back">Back to chat</button>'
    + '<button type="button" class="btn skip">Skip</button>'
    + '<button type="submit" class="btn-primary submit-rating">Send rating</button></div></form>'
    + '<div class="done" hidden><h3 tabindex="-1">Thank you</h3><p class="done-text"></p>'
    + '<button type="button" class="btn-primary new-chat">Start a new chat</button></div>'
    + '</section>';

  var host = document.createElement('cbd-chat-widget');
  if (pageMode) host.setAttribute('data-mode', 'page');
  // On someone else's site the widget lives in a Shadow DOM, so neither page's styles reach
  // the other. In page mode the page is ours alone: the chat is plain DOM (the same markup
  // and styles, `:host` read as the element itself), as easy to inspect as any page.
  var root = pageMode ? host : host.attachShadow({ mode: 'open' });
  var css = pageMode
    ? CSS.replace(/:host\(([^)]*)\)/g, 'cbd-chat-widget$1').replace(/:host/g, 'cbd-chat-widget')
    : CSS;
  // A constructed style sheet, not a <style> element: pages with a strict Content-Security-Policy
  // (ours included: no 'unsafe-inline') block inline <style> but not constructed sheets.
  var sheet = null;
  try {
    sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
  } catch (e) {
    sheet = null;
  }
  var sheetHolder = pageMode ? document : root;
  if (sheet && 'adoptedStyleSheets' in sheetHolder) {
    sheetHolder.adoptedStyleSheets = sheetHolder.adoptedStyleSheets.concat([sheet]);
    root.innerHTML = HTML;
  } else {
    root.innerHTML = '<style>' + css + '</style>' + HTML;
  }
  function $(selector) { return root.querySelector(selector); }

  var $launcher = $('.launcher');
  var $badge = $('.badge');
  var $panel = $('.panel');
  var $status = $('.status');
  var $log = $('.log');
  var $empty = $('.empty');
  var $typing = $('.typing');
  var $typingStatus = $('.typing-status');
  var $composer = $('.composer');
  var $input = $('#cbd-input');
  var $error = $('#cbd-error');
  var $end = $('.end');
  var $rating = $('.rating');
  var $comment = $('#cbd-comment');
  var $ratingError = $('#cbd-rating-error');
  var $ratingSubmit = $('.submit-rating');
  var $done = $('.done');
  var $doneText = $('.done-text');
  $('#cbd-title').textContent = title;
  if (pageMode) $('#cbd-hint').textContent = 'Enter to send, Shift+Enter for a new line';
  // One name; aria-expanded says whether the chat is open.
  $launcher.setAttribute('aria-label', title);

  // ---- state -------------------------------------------------------------------------------

  var ws = null;
  var attempt = 0;
  var reconnectTimer = null;
  var holdUntil = 0;          // test hook: no reconnecting before this time
  var stopped = false;        // refused by the server, or the chat ended
  var lastFrameId = null;     // newest frame id seen; sent as `after` on reconnect
  var seen = new Set();       // frame ids already handled (safety net; the server dedupes too)
  var seenOrder = [];
  var pending = new Map();    // client_message_id -> unacknowledged message
  var customerBubbles = new Map();  // client_message_id -> bubble (drawn once, even if replayed)
  var turnBubbles = new Set();
  var replies = new Map();    // reply_id -> {el, label, text, chunks, final}
  var sending = new Set();    // client_message_ids transmitted, not yet accepted
  var waitingTurns = new Map();     // turn_id -> timeout: accepted, no reply text yet
  var answeredTurns = new Set();
  var personHandling = false;
  var ratingPending = null;   // the rating frame, until `rating_accepted`
  var endPending = null;      // the end frame, until `ended` (or a refusal)
  var ended = false;          // the server closed the conversation: nothing more goes into it
  var skipAfterEnd = false;   // "Skip" pressed before the server confirmed the end
  var unread = 0;
  var inReplay = false;       // frames before `resumed` are history, not news
  var stats = { connects: 0, resumes: 0, replayed: 0, duplicatesDropped: 0 };

  // ---- rendering ---------------------------------------------------------------------------

  function nearBottom() { return $log.scrollHeight - $log.scrollTop - $log.clientHeight < 80; }
  function toBottom() { $log.scrollTop = $log.scrollHeight; }
  function append(el) {
    var stick = nearBottom();
    $empty.hidden = true;
    $log.appendChild(el);
    if (stick) toBottom();
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function customerBubble(text, clientMessageId) {
    var bubble = el('div', 'msg msg-customer');
    if (clientMessageId) bubble.dataset.clientMessageId = clientMessageId;
    bubble.appendChild(el('div', 'msg-text', text));
    var meta = el('div', 'msg-meta');
    meta.setAttribute('aria-hidden', 'true');
    bubble.appendChild(meta);
    if (clientMessageId) customerBubbles.set(clientMessageId, bubble);
    append(bubble);
    return bubble;
  }

  function setCustomerState(entry, state) {
    var bubble = entry.el;
    bubble.dataset.state = state;
    var meta = bubble.querySelector('.msg-meta');
    meta.textContent = '';
    // Delivery ticks would make the live region chatty; only a failure is announced.
    if (state === 'failed') meta.removeAttribute('aria-hidden');
    else meta.setAttribute('aria-hidden', 'true');
    if (state === 'sending') meta.textContent = 'Sending…';
    else if (state === 'queued') meta.textContent = 'Waiting for connection…';
    else if (state === 'sent') meta.textContent = 'Sent';
    else if (state === 'failed') {
      meta.appendChild(document.createTextNode('Not sent'));
      var retry = el('button', 'retry', 'Retry');
      retry.type = 'button';
      retry.setAttribute('aria-label', 'Retry sending this message');
      retry.addEventListener('click', function () {
        entry.resends = 0;
        pending.set(entry.id, entry);
        transmit(entry);
        $input.focus();
      });
      meta.appendChild(retry);
    }
  }

  function authorOf(author) { return author === 'agent' || author === 'system' ? author : 'bot'; }

  function replyBubble(replyId, turnId, author) {
    var r = replies.get(replyId);
    if (!r) {
      var bubble = el('div', 'msg');
      bubble.dataset.replyId = replyId;
      var label = el('div', 'msg-author');
      var text = el('div', 'msg-text');
      bubble.appendChild(label);
      bubble.appendChild(text);
      r = { el: bubble, label: label, text: text, chunks: new Map(), final: false };
      replies.set(replyId, r);
      append(bubble);
      noteUnread();
    }
    if (turnId) r.el.dataset.turnId = turnId;
    if (author !== null) {
      var a = authorOf(author);
      r.el.classList.remove('msg-bot', 'msg-agent', 'msg-system');
      r.el.classList.add('msg-' + a);
      // Only a person gets a visible name; the assistant's bubble is just its words.
      r.label.textContent = a === 'agent' ? 'Agent' : '';
      r.label.hidden = a !== 'agent';
    }
    return r;
  }

  // ---- typing indicator ----------------------------------------------------------------------

  function updateTyping() {
    var show = !personHandling && (sending.size > 0 || waitingTurns.size > 0);
    if (show === !$typing.hidden) return;
    var stick = nearBottom();
    $typing.hidden = !show;
    // Screen readers hear it once, not the animated dots.
    $typingStatus.textContent = show ? 'Assistant is typing' : '';
    if (show && stick) toBottom();
  }
  function turnWaiting(turnId) {
    if (personHandling || !turnId || answeredTurns.has(turnId) || waitingTurns.has(turnId)) return;
    waitingTurns.set(turnId, setTimeout(function () {
      waitingTurns.delete(turnId);
      updateTyping();
    }, TYPING_TIMEOUT_MS));
  }
  function turnAnswered(turnId) {
    if (!turnId) return;
    answeredTurns.add(turnId);
    var t = waitingTurns.get(turnId);
    if (t !== undefined) {
      clearTimeout(t);
      waitingTurns.delete(turnId);
    }
  }

  // ---- frames from the server ----------------------------------------------------------------

  function frameKey(id) {
    var parts = String(id).split('-');
    return [Number(parts[0]) || 0, Number(parts[1]) || 0];
  }
  function newer(a, b) {
    if (b === null) return true;
    var x = frameKey(a), y = frameKey(b);
    return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]);
  }
  function remember(id) {
    seen.add(id);
    seenOrder.push(id);
    if (seenOrder.length > SEEN_MEMORY) seen.delete(seenOrder.shift());
    if (newer(id, lastFrameId)) lastFrameId = id;
  }

  function onFrame(f) {
    if (typeof f.id === 'string') {
      if (seen.has(f.id)) {
        stats.duplicatesDropped += 1;
        return;
      }
      remember(f.id);
    }
    switch (f.type) {
      case 'accepted': onAccepted(f); break;
      case 'delta': onDelta(f); break;
      case 'reply': onReply(f); break;
      case 'resumed': onResumed(f); break;
      case 'rating_accepted': onRatingAccepted(f); break;
      case 'ended': onEnded(f); break;
      case 'error': onError(f); break;
      default: break; // unknown frames are ignored, so the server can add new ones
    }
    updateTyping();
  }

  function onAccepted(f) {
    var id = f.client_message_id;
    var entry = id ? pending.get(id) : null;
    if (id) sending.delete(id);
    if (entry) {
      pending.delete(id);
      setCustomerState(entry, 'sent');
    } else if (id && !customerBubbles.has(id) && typeof f.text === 'string') {
      // Sent before a reload, or from another tab: draw it once, from the replay.
      setCustomerState({ el: customerBubble(f.text, id) }, 'sent');
    }
    if (f.turn_id) {
      var bubble = id ? customerBubbles.get(id) : null;
      if (bubble) bubble.dataset.turnId = f.turn_id;
      turnBubbles.add(f.turn_id);
      turnWaiting(f.turn_id);
    }
  }

  function onDelta(f) {
    if (!f.reply_id) return;
    var existing = replies.get(f.reply_id);
    if (existing && existing.final) return; // the complete reply is already shown
    if (f.withdrawn === true) {
      // A person took over while the assistant was writing: its half reply is taken back
      // (the person answers); remembered as final so a late slice draws nothing.
      if (existing) existing.el.remove();
      replies.set(f.reply_id, existing || { el: el('div', 'msg'), chunks: new Map() });
      replies.get(f.reply_id).final = true;
      return;
    }
    turnAnswered(f.turn_id);
    var r = replyBubble(f.reply_id, f.turn_id, existing ? null : 'bot');
    var seq = typeof f.seq === 'number' ? f.seq : r.chunks.size;
    if (r.chunks.has(seq)) return;
    r.chunks.set(seq, String(f.text == null ? '' : f.text));
    var ordered = Array.from(r.chunks.keys()).sort(function (a, b) { return a - b; })
      .map(function (k) { return r.chunks.get(k); });
    var stick = nearBottom();
    // Hidden from screen readers while streaming: the log announces the reply once, complete.
    r.el.classList.add('streaming');
    r.el.setAttribute('aria-hidden', 'true');
    r.text.textContent = ordered.join('');
    if (stick) toBottom();
  }

  function onReply(f) {
    if (!f.reply_id) return;
    turnAnswered(f.turn_id);
    var r = replyBubble(f.reply_id, f.turn_id, f.author);
    var stick = nearBottom();
    r.final = true;
    r.chunks.clear();
    r.el.classList.remove('streaming');
    r.el.removeAttribute('aria-hidden');
    // Fresh nodes, so assistive tech hears author and final text as one addition.
    var label = r.label.cloneNode(true);
    var text = el('div', 'msg-text', String(f.text == null ? '' : f.text));
    r.el.replaceChildren(label, text);
    r.label = label;
    r.text = text;
    var flags = Array.isArray(f.flags) ? f.flags : [];
    if (flags.length) r.el.dataset.flags = flags.join(' ');
    else delete r.el.dataset.flags;
    if (f.author === 'agent' || flags.indexOf('handoff') >= 0 || flags.indexOf('needs_human') >= 0) {
      personHandling = true;
    } else if (f.author === 'bot') {
      personHandling = false;
    }
    if (stick) toBottom();
  }

  function onResumed(f) {
    inReplay = false;
    stats.resumes += 1;
    stats.replayed += Number(f.replayed) || 0;
    // The replay has settled whatever the server had already accepted; resend the rest.
    for (var entry of Array.from(pending.values())) {
      if (entry.transmitted) entry.resends = (entry.resends || 0) + 1;
      if (entry.resends > MAX_RESENDS) {
        pending.delete(entry.id);
        sending.delete(entry.id);
        setCustomerState(entry, 'failed');
        continue;
      }
      transmit(entry);
    }
    if (endPending) sendEnd();
    if (ratingPending) sendRating();
  }

  function onRatingAccepted(f) {
    if (!ratingPending || f.client_message_id !== ratingPending.client_message_id) return;
    ratingPending = null;
    finishChat('Your rating helps us care better. Thank you for chatting with us.');
  }

  // The conversation is over (this tab's "End chat", another tab's, or a REST end): the
  // survey replaces the composer and nothing more is sent into it.
  function onEnded(f) {
    if (endPending && f.client_message_id === endPending.client_message_id) endPending = null;
    if (skipAfterEnd && !endPending) {
      skipAfterEnd = false;
      $('.skip').disabled = false;
      ended = true;
      finishChat('Thank you for chatting with us.');
      return;
    }
    if (ended) return;
    ended = true;
    saveConversation({ ended: true });
    pending.forEach(function (entry) { setCustomerState(entry, 'failed'); });
    pending.clear();
    sending.clear();
    if ($done.hidden) showRating();
  }

  function onError(f) {
    var message = f.message || f.error || 'Something went wrong.';
    var id = f.client_message_id;
    if (endPending && id === endPending.client_message_id) {
      if (Number(f.status) >= 400 && Number(f.status) < 500) {
        endPending = null;
        skipAfterEnd = false;
        $('.skip').disabled = false;
        $ratingError.textContent = 'The chat could not be ended: ' + message;
        backToChat();
        showError('The chat could not be ended: ' + message);
      }
      return; // a server error: resent once the connection has resumed
    }
    if (ratingPending && id === ratingPending.client_message_id) {
      $ratingSubmit.disabled = false;
      if (Number(f.status) >= 400 && Number(f.status) < 500) ratingPending = null;
      $ratingError.textContent = 'Your rating was not sent: ' + message;
      return;
    }
    var entry = id ? pending.get(id) : null;
    if (entry) {
      sending.delete(id);
      if (Number(f.status) >= 400 && Number(f.status) < 500) {
        pending.delete(id);
        setCustomerState(entry, 'failed');
      } else {
        setCustomerState(entry, 'queued'); // resent on the next connection
      }
    }
    showError(message);
  }

  // ---- connection ----------------------------------------------------------------------------

  function setStatus(state, text) {
    $status.dataset.state = state;
    $status.textContent = text;
  }

  function socketUrl() {
    var q = 'customer_id=' + encodeURIComponent(customerId);
    if (widgetKey) q += '&key=' + encodeURIComponent(widgetKey);
    if (customerHash) q += '&customer_hash=' + encodeURIComponent(customerHash);
    // Always resume: `0` replays the buffered conversation (after a reload), a frame id
    // replays only what this page missed.
    q += '&after=' + encodeURIComponent(lastFrameId || '0');
    return wsBase + '/v1/conversations/' + encodeURIComponent(conversationId) + '/ws?' + q;
  }

  function isOpen() { return ws !== null && ws.readyState === WebSocket.OPEN; }

  function connect() {
    if (stopped) return;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    var wait = holdUntil - Date.now();
    if (wait > 0) {
      reconnectTimer = setTimeout(connect, wait);
      return;
    }
    var sock;
    try {
      sock = new WebSocket(socketUrl());
    } catch (_) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    inReplay = true;
    setStatus('connecting', attempt ? 'Reconnecting…' : 'Connecting…');
    sock.addEventListener('open', function () {
      if (sock !== ws) return;
      attempt = 0;
      stats.connects += 1;
      setStatus('connected', 'Connected');
    });
    sock.addEventListener('message', function (ev) {
      if (sock !== ws) return;
      var frame;
      try { frame = JSON.parse(ev.data); } catch (_) { return; }
      if (frame && typeof frame === 'object') onFrame(frame);
    });
    sock.addEventListener('close', function (ev) {
      if (sock !== ws) return; // a socket closed on purpose
      ws = null;
      sending.forEach(function (id) {
        var entry = pending.get(id);
        if (entry) setCustomerState(entry, 'queued');
      });
      sending.clear();
      updateTyping();
      // 4400-4499: the server refused this connection (bad key, origin, identity): retrying
      // cannot help, except when it was only too many requests.
      if (ev.code >= 4400 && ev.code < 4500 && ev.code !== 4429) {
        stopped = true;
        setStatus('error', 'Chat is unavailable');
        return;
      }
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    if (reconnectTimer || stopped) return;
    var delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    delay = Math.round(delay * (0.8 + Math.random() * 0.4)); // jitter: no thundering herd
    attempt += 1;
    setStatus('reconnecting', 'Reconnecting…');
    reconnectTimer = setTimeout(connect, Math.max(delay, holdUntil - Date.now()));
  }

  function ensureConnected() {
    if (!ws && !reconnectTimer && !stopped) connect();
  }

  window.addEventListener('online', function () {
    if (!isOpen() && reconnectTimer && !stopped) {
      attempt = 0;
      connect();
    }
  });

  function transmit(entry) {
    if (!isOpen()) {
      setCustomerState(entry, 'queued');
      ensureConnected();
      return;
    }
    try {
      ws.send(JSON.stringify({ type: 'message', text: entry.text, client_message_id: entry.id }));
      entry.transmitted = true;
      sending.add(entry.id);
      setCustomerState(entry, 'sending');
    } catch (_) {
      setCustomerState(entry, 'queued');
    }
    updateTyping();
  }

  // ---- composer ------------------------------------------------------------------------------

  function showError(text) { $error.textContent = text; }
  function clearError() {
    $error.textContent = '';
    $input.removeAttribute('aria-invalid');
  }
  function autosize() {
    $input.style.height = 'auto';
    $input.style.height = Math.min($input.scrollHeight + 2, 144) + 'px';
  }

  function submit() {
    var text = $input.value.trim();
    if (!text) { $input.focus(); return; }
    if (text.length > MAX_LEN) {
      $input.setAttribute('aria-invalid', 'true');
      showError('Messages can be up to ' + MAX_LEN + ' characters.');
      return;
    }
    clearError();
    var id = 'cm-' + randomHex(16);
    var entry = { id: id, text: text, el: customerBubble(text, id), resends: 0, transmitted: false };
    pending.set(id, entry);
    saveConversation();
    transmit(entry);
    toBottom();
    $input.value = '';
    autosize();
    $input.focus();
  }

  $composer.addEventListener('submit', function (ev) { ev.preventDefault(); submit(); });
  $input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      submit();
    }
  });
  $input.addEventListener('input', function () {
    autosize();
    if ($input.getAttribute('aria-invalid') && $input.value.trim().length <= MAX_LEN) clearError();
  });

  // ---- open / close --------------------------------------------------------------------------

  function noteUnread() {
    if (!$panel.hidden || inReplay) return;
    unread += 1;
    $badge.hidden = false;
    $badge.textContent = String(unread);
    $launcher.setAttribute('aria-label', title + ', ' + unread + ' new');
  }

  function open() {
    $panel.hidden = false;
    $launcher.setAttribute('aria-expanded', 'true');
    $launcher.setAttribute('aria-label', title);
    unread = 0;
    $badge.hidden = true;
    storageSet(window.sessionStorage, OPEN_KEY, '1');
    ensureConnected();
    toBottom();
    focusCurrent();
  }
  function close() {
    if (pageMode) return; // the page is the chat: there is nothing to close to
    $panel.hidden = true;
    $launcher.setAttribute('aria-expanded', 'false');
    storageSet(window.sessionStorage, OPEN_KEY, '0');
    $launcher.focus();
  }
  function focusCurrent() {
    if (!$done.hidden) $done.querySelector('h3').focus();
    else if (!$rating.hidden) ($rating.querySelector('input:checked') || $rating.querySelector('input')).focus();
    else $input.focus();
  }

  $launcher.addEventListener('click', function () {
    if ($panel.hidden) open(); else close();
  });
  $('.close').addEventListener('click', close);
  // Escape closes from anywhere in the widget and hands focus back to the launcher.
  root.addEventListener('keydown', function (ev) {
    if (ev.key === 'Escape' && !$panel.hidden) {
      ev.preventDefault();
      ev.stopPropagation();
      close();
    }
  });

  // ---- end of chat & rating ------------------------------------------------------------------

  function showRating() {
    $composer.hidden = true;
    $end.hidden = true;
    // Once ended there is no chat to go back to.
    $('.back').hidden = ended || endPending !== null;
    $rating.hidden = false;
    $ratingError.textContent = '';
    $rating.querySelector('input').focus();
  }
  function backToChat() {
    $rating.hidden = true;
    $composer.hidden = false;
    $end.hidden = false;
    $input.focus();
  }
  function endChat() {
    if (ended || endPending) { showRating(); return; }
    endPending = { type: 'end', client_message_id: 'end-' + randomHex(16) };
    sendEnd();
    showRating();
  }
  function sendEnd() {
    if (!endPending) return;
    if (!isOpen()) { ensureConnected(); return; } // sent once the connection has resumed
    try { ws.send(JSON.stringify(endPending)); } catch (_) { /* resent on reconnect */ }
  }
  function sendRating() {
    if (!ratingPending) return;
    if (!isOpen()) { ensureConnected(); return; } // sent once the connection has resumed
    try { ws.send(JSON.stringify(ratingPending)); } catch (_) { /* resent on reconnect */ }
  }
  function finishChat(message) {
    stopped = true;
    saveConversation({ ended: true });
    var old = ws;
    ws = null;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (old) { try { old.close(1000, 'chat ended'); } catch (_) { /* already closed */ } }
    sending.clear();
    waitingTurns.forEach(function (t) { clearTimeout(t); });
    waitingTurns.clear();
    updateTyping();
    setStatus('idle', 'Chat ended');
    $rating.hidden = true;
    $composer.hidden = true;
    $end.hidden = true;
    $doneText.textContent = message;
    $done.hidden = false;
    $done.querySelector('h3').focus();
  }

  $end.addEventListener('click', endChat);
  $('.back').addEventListener('click', backToChat);
  $('.skip').addEventListener('click', function () {
    ratingPending = null;
    // The socket stays open until the server has the end, so it is never lost.
    if (endPending) { skipAfterEnd = true; $('.skip').disabled = true; return; }
    finishChat('Thank you for chatting with us.');
  });
  $rating.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var checked = $rating.querySelector('input[name="rating"]:checked');
    if (!checked) {
      $ratingError.textContent = 'Choose a rating from 1 to 5.';
      $rating.querySelector('input').focus();
      return;
    }
    var comment = $comment.value.trim();
    if (comment.length > MAX_COMMENT) {
      $ratingError.textContent = 'Comments can be up to ' + MAX_COMMENT + ' characters.';
      return;
    }
    $ratingError.textContent = '';
    $ratingSubmit.disabled = true;
    ratingPending = {
      type: 'rating',
      rating: Number(checked.value),
      comment: comment,
      client_message_id: 'rt-' + randomHex(16)
    };
    sendRating();
  });
  // Choosing a rating answers the "choose a rating" error.
  $rating.addEventListener('change', function () {
    if ($rating.querySelector('input[name="rating"]:checked') && !ratingPending) {
      $ratingError.textContent = '';
    }
  });

  function newChat() {
    var old = ws;
    ws = null;
    if (old) { try { old.close(1000, 'new conversation'); } catch (_) { /* closed */ } }
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    stopped = false;
    attempt = 0;
    lastFrameId = null;
    seen.clear();
    seenOrder = [];
    pending.clear();
    customerBubbles.clear();
    turnBubbles.clear();
    replies.clear();
    sending.clear();
    waitingTurns.forEach(function (t) { clearTimeout(t); });
    waitingTurns.clear();
    answeredTurns.clear();
    personHandling = false;
    ratingPending = null;
    endPending = null;
    ended = false;
    skipAfterEnd = false;
    $('.skip').disabled = false;
    $('.back').hidden = false;
    $ratingSubmit.disabled = false;
    $rating.reset();
    Array.from($log.querySelectorAll('.msg')).forEach(function (m) { m.remove(); });
    $empty.hidden = false;
    conversationId = 'conv-' + randomHex(16);
    saveConversation();
    $done.hidden = true;
    $rating.hidden = true;
    $composer.hidden = false;
    $end.hidden = false;
    clearError();
    updateTyping();
    connect();
    $input.focus();
  }
  $('.new-chat').addEventListener('click', newChat);

  // ---- start ---------------------------------------------------------------------------------

  window.__cbdWidget = {
    open: open,
    close: close,
    /** Debugging and tests: close the socket as a network drop would, and stay offline
     *  for `holdMs` before reconnecting (with `after`, so nothing is lost). */
    dropConnection: function (holdMs) {
      holdUntil = Date.now() + (Number(holdMs) || 0);
      if (ws) { try { ws.close(4000, 'dropped'); } catch (_) { /* closed */ } }
    },
    state: function () {
      return {
        conversationId: conversationId,
        customerId: customerId,
        lastFrameId: lastFrameId,
        connected: isOpen(),
        pending: pending.size,
        ended: ended,
        stats: Object.assign({}, stats)
      };
    }
  };

  function mount() {
    document.body.appendChild(host);
    // Reconnect at once to a conversation still under way, so its replies keep arriving.
    if (hadConversation) connect();
    if (pageMode || storageGet(window.sessionStorage, OPEN_KEY) === '1') open();
  }
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount);
})();
