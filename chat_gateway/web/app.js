// The chat page: the gateway's own /chat API, and /v1/models for the models to pick from. Every answer is followed by its message id and
// the offset of the last event shown, so a reload, a second tab or a restarted gateway picks it up exactly
// where it is (GET /chat/messages/{id}/stream with Last-Event-ID), never twice and never with a gap.
import { marked } from "./vendor/marked.js";
import DOMPurify from "./vendor/purify.js";
import hljs from "./vendor/highlight.js";
import { createParser } from "./vendor/eventsource-parser/index.js";

// The page's own elements, each by its id in camelCase (`sign-in-form`: ui.signInForm), found once before anything
// is rendered: looked up later, an id in a chat's content could stand in for one of them.
const ui = Object.freeze(
  Object.fromEntries(
    [...document.querySelectorAll("[id]")].map((element) => [
      element.id.replace(/-(\w)/g, (_, letter) => letter.toUpperCase()),
      element,
    ]),
  ),
);
const KEY_STORAGE = "durable-chat.key";
const RECONNECT_GIVE_UP_MS = 120_000; // then the page says so, and a button follows the answer again
const RENDER_EVERY_MS = 50; // Markdown is rendered at most this often while an answer grows

const state = {
  key: localStorage.getItem(KEY_STORAGE),
  openMode: false,
  sessionId: null, // the chat shown
  sessions: [],
  follows: new Map(), // MessageView -> AbortController of the stream that follows it
  searching: false,
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// HTTP

async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const sent = { ...headers };
  if (state.key) sent["x-api-key"] = state.key;
  if (body !== undefined) sent["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (response.ok) return response;
  let detail = `${response.status} ${response.statusText}`;
  try {
    const error = await response.json();
    detail = error.detail || error.error?.message || detail;
  } catch {
    // not JSON: the status says it
  }
  if (response.status === 401) signIn("That key was not accepted.");
  throw new ApiError(response.status, detail);
}

const json = async (path, options) => (await api(path, options)).json();

// Server-Sent Events, read from a fetch (EventSource cannot send a key); resolves when the stream ends.
async function readEvents(response, onEvent) {
  const parser = createParser({ onEvent });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}

// Rendering

// A task list's boxes are drawn as characters: no <input> comes out of an answer (below).
marked.use({ gfm: true, breaks: false, renderer: { checkbox: ({ checked }) => (checked ? "☑ " : "☐ ") } });

// What an answer's Markdown may become on the page: text, structure, links, images and code, never a form or a
// control (a form posting what the reader types to another site; a button or a field posing as the page's own; a
// label whose `for` clicks one of the page's buttons) and never an id or a name, which could stand in for the
// page's own elements or clobber properties of `document`. Markdown makes none of these itself (marked gives
// headings no ids), so nothing is lost; SANITIZE_DOM (DOMPurify's default) stays on, and SANITIZE_NAMED_PROPS,
// which would keep ids under a prefix, is not needed with none kept.
const ANSWER_HTML = {
  // A form and everything that can be part of one.
  FORBID_TAGS: ["form", "fieldset", "legend", "label", "output", "input", "button", "textarea", "select", "option",
    "optgroup", "datalist"],
  FORBID_ATTR: ["id", "name"],
};

// A URL path with data in it: each value becomes one segment, encoded, so an id or an address's hash can neither
// add segments nor climb out of its route. "." and ".." are refused: a browser resolves them, encoded or not.
function path(strings, ...values) {
  return strings.reduce((built, string, index) => {
    const value = String(values[index - 1]);
    if (value === "." || value === "..") throw new TypeError(`“${value}” names no chat or message`);
    return built + encodeURIComponent(value) + string;
  });
}

function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(marked.parse(text), ANSWER_HTML);
  for (const block of element.querySelectorAll("pre code")) hljs.highlightElement(block);
  for (const link of element.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer";
  }
}

function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

function setStatus(text, kind = "info") {
  ui.status.hidden = !text;
  ui.status.textContent = text || "";
  ui.status.dataset.kind = kind;
}

function scrollToEnd() {
  const box = ui.messages;
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

// One message on the page. An answer's text grows through `append`; it is rendered at most every
// RENDER_EVERY_MS, and `offset` is the id of the last event applied (what a reconnect asks to continue from).
class MessageView {
  constructor(message) {
    this.id = message.id;
    this.role = message.role;
    this.text = message.content || "";
    this.calls = [];
    this.offset = null;
    this.body = el("div", { class: "body" });
    this.extras = el("div", { class: "extras" }); // its tool calls and the parts it holds besides text
    this.footer = el("div", { class: "footer" });
    this.element = el(
      "article",
      { class: `message ${message.role}`, "data-id": message.id, "data-status": message.status || "complete" },
      el("div", { class: "role", text: roleName(message) }),
      this.body,
      this.extras,
      this.footer,
    );
    this.pending = null;
    for (const call of message.tool_calls || []) this.addCall(call);
    this.render();
    if (message.parts) this.showParts(message.parts);
  }

  render() {
    this.pending = null;
    if (this.role === "tool") {
      this.body.replaceChildren(el("pre", { class: "result", text: this.text }));
    } else if (this.role === "user") {
      this.body.replaceChildren(el("p", { class: "plain", text: this.text }));
    } else {
      renderMarkdown(this.body, this.text);
    }
    scrollToEnd();
  }

  renderSoon() {
    this.pending ??= setTimeout(() => this.render(), RENDER_EVERY_MS);
  }

  replace(text) {
    this.text = text;
    this.renderSoon();
  }

  append(text) {
    this.text += text;
    this.renderSoon();
  }

  addCall(call) {
    if (this.calls.some((known) => known.id === call.id)) return;
    this.calls.push(call);
    let args = call.function.arguments;
    try {
      args = JSON.stringify(JSON.parse(args), null, 2);
    } catch {
      // shown as the model wrote them
    }
    const details = el(
      "details",
      { class: "tool-call" },
      el("summary", {}, "Calls ", el("code", { text: call.function.name })),
      el("pre", { text: args }),
    );
    this.extras.append(details);
  }

  showParts(parts) {
    for (const part of parts) {
      if (part.type === "image_url") {
        const url = part.image_url?.url || "";
        const label = url.startsWith("data:") ? "an attached image" : url;
        this.extras.append(el("p", { class: "part", text: `Image: ${label}` }));
      }
    }
  }

  setStatus(status, error) {
    if (this.pending) {
      clearTimeout(this.pending);
      this.render();
    }
    this.element.dataset.status = status;
    this.footer.replaceChildren();
    if (status === "failed") {
      const resume = el("button", { type: "button", class: "resume", text: "Resume" });
      resume.addEventListener("click", () => resumeAnswer(this));
      this.footer.append(el("span", { class: "error", text: `Stopped: ${error || "failed"}. ` }), resume);
    } else if (status === "lost") {
      const again = el("button", { type: "button", text: "Follow it again" });
      again.addEventListener("click", () => follow(this, null));
      this.footer.append(el("span", { class: "error", text: `${error} ` }), again);
    } else if (status === "in_progress" || status === "pending") {
      this.footer.append(el("span", { class: "typing", "aria-label": "Answering", text: "●●●" }));
    }
  }
}

function roleName(message) {
  if (message.role === "tool") return `Result${message.name ? ` of ${message.name}` : ""}`;
  return { user: "You", assistant: "Assistant", system: "System" }[message.role] || message.role;
}

function addView(message) {
  const view = new MessageView(message);
  ui.messages.append(view.element);
  ui.welcome.hidden = true;
  return view;
}

// Following answers

function busy(isBusy) {
  ui.send.hidden = isBusy;
  ui.stop.hidden = !isBusy;
}

function activeAnswer() {
  for (const view of state.follows.keys()) if (view.element.isConnected) return view;
  return null;
}

// Follows an answer to its end: `first` is the response that started it (a POST), else it is read from
// `view.offset` (null: from its beginning, which replaces the text shown). Reconnects while it can.
async function follow(view, first) {
  state.follows.get(view)?.abort();
  const control = new AbortController();
  state.follows.set(view, control);
  busy(true);
  view.setStatus("in_progress");
  let ended = false;
  let failedSince = null;
  let attempt = 0;
  const onEvent = (event) => {
    const data = JSON.parse(event.data);
    if (event.event === "start") {
      started(view, data);
      if (data.offset === 0) view.replace("");
    } else if (event.event === "delta") {
      view.append(data.text);
    } else if (event.event === "tool_call") {
      view.addCall(data);
    } else if (event.event === "done") {
      ended = true;
      view.setStatus(data.status);
    } else if (event.event === "error") {
      if (data.status) {
        ended = true;
        view.setStatus(data.status, data.error);
      } else {
        // Lost track, or continued differently after a takeover: read it again from the start.
        view.offset = null;
        return;
      }
    }
    if (event.id !== undefined) view.offset = Number(event.id);
    if (failedSince !== null) {
      // Reconnected: the answer moves on again.
      attempt = 0;
      failedSince = null;
      setStatus(null);
    }
  };
  try {
    while (!control.signal.aborted) {
      try {
        const response =
          first ??
          (await api(path`/chat/messages/${view.id}/stream`, {
            headers: view.offset === null ? {} : { "Last-Event-ID": String(view.offset) },
            signal: control.signal,
          }));
        first = null;
        await readEvents(response, onEvent);
        if (ended) return;
      } catch (error) {
        if (control.signal.aborted) return;
        if (view.id === null) {
          view.setStatus("lost", "The connection dropped before the answer began: reload to see whether it was sent.");
          return;
        }
        const transient = !(error instanceof ApiError) || error.status >= 500 || error.status === 429;
        if (!transient) {
          view.setStatus("lost", `Could not follow the answer: ${error.message}.`);
          return;
        }
      }
      failedSince ??= Date.now();
      if (Date.now() - failedSince > RECONNECT_GIVE_UP_MS) {
        view.setStatus("lost", "The gateway has been unreachable for two minutes; the answer is kept.");
        setStatus(null);
        return;
      }
      setStatus("Reconnecting… the answer goes on, and will continue here where it stopped.", "warning");
      attempt += 1;
      await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** attempt)));
    }
  } finally {
    if (state.follows.get(view) === control) state.follows.delete(view);
    if (!activeAnswer()) busy(false);
    if (ended) loadSessions();
  }
}

// Sending a message: the answer is followed from the POST's own stream, whose first event names it.
async function send(text) {
  const question = addView({ id: `local-${Date.now()}`, role: "user", content: text, status: "complete" });
  const answer = addView({ id: null, role: "assistant", content: "", status: "in_progress" });
  busy(true);
  const body = { message: text, stream: true, ...(state.sessionId ? { session_id: state.sessionId } : {}) };
  if (ui.model.value) body.model = ui.model.value;
  const response = await api("/chat", { method: "POST", body }).catch((error) => error);
  if (response instanceof Error) {
    for (const view of [question, answer]) view.element.remove();
    ui.input.value = text; // not sent: nothing is lost
    busy(false);
    setStatus(`Not sent: ${response.message}`, "error");
    return;
  }
  follow(answer, response);
}

// The first event of a new answer: now it has an id, and its chat is known.
function started(view, data) {
  if (view.id !== null) return;
  view.id = data.message_id;
  view.element.dataset.id = data.message_id;
  if (state.sessionId !== data.session_id) {
    state.sessionId = data.session_id;
    history.replaceState(null, "", `#${encodeURIComponent(data.session_id)}`);
  }
  loadSessions();
}

async function stop() {
  const view = activeAnswer();
  if (!view) return;
  try {
    await api(path`/chat/messages/${view.id}/cancel`, { method: "POST" });
  } catch (error) {
    setStatus(`Could not stop it: ${error.message}`, "error");
  }
}

async function resumeAnswer(view) {
  try {
    const response = await api(`${path`/chat/messages/${view.id}/resume`}?stream=true`, { method: "POST" });
    view.offset = null;
    follow(view, response);
  } catch (error) {
    setStatus(`Could not resume it: ${error.message}`, "error");
  }
}

// Chats

function showSessions(sessions, searched = false) {
  const list = ui.sessions;
  list.replaceChildren();
  for (const session of sessions) {
    const link = el("a", { href: `#${encodeURIComponent(session.id)}`, "data-id": session.id });
    link.append(
      el("span", { class: "star", "aria-label": session.is_favorite ? "favorite" : "", text: session.is_favorite ? "★" : "" }),
      el("span", { class: "name", text: session.title }),
    );
    if (session.snippet) link.append(el("span", { class: "snippet", text: session.snippet.replaceAll("**", "") }));
    if (session.id === state.sessionId) link.setAttribute("aria-current", "page");
    list.append(el("li", {}, link));
  }
  const empty = ui.sessionsEmpty;
  empty.hidden = sessions.length > 0;
  empty.textContent = searched ? "Nothing found." : "No chats yet.";
}

async function loadSessions() {
  if (state.searching) return;
  try {
    const page = await json("/chat/sessions?limit=200");
    state.sessions = page.items;
    showSessions(page.items);
    const current = currentSession();
    if (current) showTitle(current);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setStatus(`Chats not loaded: ${error.message}`, "error");
  }
}

async function search(query) {
  state.searching = Boolean(query);
  if (!query) return loadSessions();
  try {
    const page = await json(`/chat/search?${new URLSearchParams({ q: query, limit: 50 })}`);
    const seen = new Set();
    const hits = [];
    for (const hit of page.items) {
      if (seen.has(hit.session_id)) continue;
      seen.add(hit.session_id);
      hits.push({ id: hit.session_id, title: hit.title, snippet: hit.kind === "message" ? hit.snippet : "" });
    }
    showSessions(hits, true);
  } catch (error) {
    setStatus(`Search failed: ${error.message}`, "error");
  }
}

function showTitle(session) {
  ui.title.textContent = session ? session.title : "New chat";
  ui.sessionActions.hidden = !session;
  const star = ui.favorite;
  star.textContent = session?.is_favorite ? "★" : "☆";
  star.setAttribute("aria-pressed", String(Boolean(session?.is_favorite)));
  document.title = session ? `${session.title} · Durable chat` : "Durable chat";
}

async function openSession(sessionId) {
  for (const control of state.follows.values()) control.abort();
  state.follows.clear();
  ui.messages.replaceChildren();
  busy(false);
  setStatus(null);
  state.sessionId = sessionId;
  showSessions(state.sessions);
  closeSidebarOnPhones();
  if (!sessionId) {
    showTitle(null);
    ui.welcome.hidden = false;
    ui.input.focus();
    return;
  }
  ui.welcome.hidden = true;
  try {
    const [session, messages] = await Promise.all([
      json(path`/chat/sessions/${sessionId}`),
      allMessages(sessionId),
    ]);
    if (state.sessionId !== sessionId) return;
    showTitle(session);
    for (const message of messages) {
      const view = addView(message);
      if (message.role === "assistant") {
        if (message.status === "failed") view.setStatus("failed", message.error);
        // Still being written: replayed from its start, then followed live.
        if (message.status === "in_progress" || message.status === "pending") follow(view, null);
      }
    }
    ui.messages.scrollTop = ui.messages.scrollHeight;
  } catch (error) {
    // 422: what the address names is not even an id.
    const missing = error.status === 404 || error.status === 422;
    setStatus(missing ? "That chat does not exist (any more)." : `Not loaded: ${error.message}`, "error");
    showTitle(null);
  }
}

async function allMessages(sessionId) {
  const messages = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: 200, ...(cursor ? { cursor } : {}) });
    const page = await json(`${path`/chat/sessions/${sessionId}/messages`}?${query}`);
    messages.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return messages;
}

function currentSession() {
  return state.sessions.find((session) => session.id === state.sessionId);
}

// Dialogs: a question (and, for `value`, a text to edit); resolves with the answer, or null.
function ask(title, text, { value = null, ok = "OK", danger = false } = {}) {
  const dialog = ui.ask;
  ui.askTitle.textContent = title;
  ui.askText.textContent = text;
  const input = ui.askValue;
  input.hidden = value === null;
  input.value = value ?? "";
  ui.askOk.textContent = ok;
  ui.askOk.className = danger ? "danger" : "primary";
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.removeEventListener("close", onClose);
      resolve(answer);
    };
    const onClose = () => done(dialog.returnValue === "ok" ? (value === null ? true : input.value.trim()) : null);
    dialog.addEventListener("close", onClose);
    ui.askCancel.onclick = () => dialog.close("cancel");
    ui.askOk.value = "ok";
    dialog.returnValue = "";
    dialog.showModal();
    (value === null ? ui.askCancel : input).focus();
  });
}

async function rename() {
  const session = currentSession();
  if (!session) return;
  const title = await ask("Rename the chat", "", { value: session.title, ok: "Rename" });
  if (title) await changeSession(path`/chat/sessions/${session.id}`, { method: "PUT", body: { title } }, "Not renamed");
}

async function toggleFavorite() {
  const session = currentSession();
  if (session) await changeSession(path`/chat/sessions/${session.id}/favorite`, { method: "PATCH" }, "Not changed");
}

// A change to the chat shown: its title bar, then the list, show the session as it now is.
async function changeSession(path, request, failure) {
  try {
    showTitle(await json(path, request));
    loadSessions();
  } catch (error) {
    setStatus(`${failure}: ${error.message}`, "error");
  }
}

async function remove() {
  const session = currentSession();
  if (!session) return;
  const sure = await ask("Delete this chat?", `“${session.title}” and all its messages will be gone for good.`, {
    ok: "Delete",
    danger: true,
  });
  if (!sure) return;
  try {
    await api(path`/chat/sessions/${session.id}`, { method: "DELETE" });
    history.replaceState(null, "", "#");
    await openSession(null);
    loadSessions();
  } catch (error) {
    setStatus(`Not deleted: ${error.message}`, "error");
  }
}

async function exportSession(format) {
  const session = currentSession();
  if (!session) return;
  try {
    const exported = await api(`${path`/chat/sessions/${session.id}/export`}?${new URLSearchParams({ format })}`);
    const blob = await exported.blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: `${session.title || "chat"}.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (error) {
    setStatus(`Not exported: ${error.message}`, "error");
  }
}

// Signing in: a key is kept in this browser only; open mode needs none.

function signIn(message = "") {
  const dialog = ui.signIn;
  ui.signInError.textContent = message;
  if (!dialog.open) dialog.showModal();
  ui.key.focus();
}

function showAccount() {
  ui.who.textContent = state.openMode ? "Open mode: no key needed" : "Signed in with a key";
  ui.signOut.hidden = state.openMode || !state.key;
}

async function start() {
  try {
    await json("/chat/sessions?limit=1");
    state.openMode = !state.key;
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setStatus(`The gateway did not answer: ${error.message}`, "error");
    if (error.status === 401) return; // the sign-in dialog is open; start() runs again after it
  }
  showAccount();
  loadModels();
  await loadSessions();
  await openSession(addressedSession());
  // Only now: a message sent earlier would be wiped from the page by the chat opened above.
  for (const control of [ui.input, ui.send]) control.disabled = false;
  ui.input.focus();
}

// The models the gateway serves (its upstreams' and their aliases'), to pick one; without it, the default.
async function loadModels() {
  try {
    const { data } = await json("/v1/models");
    ui.model.replaceChildren(
      el("option", { value: "" }, "Default model"),
      ...data.map((model) => el("option", { value: model.id }, `${model.id} (${model.owned_by})`)),
    );
  } catch {
    // the default model still answers
  }
}

// The chat the address names: its hash, as the page writes it (`#${encodeURIComponent(id)}`). Whatever it holds
// is only ever one segment of a path (`path`).
function addressedSession() {
  try {
    return decodeURIComponent(location.hash.slice(1)) || null;
  } catch {
    return location.hash.slice(1); // not percent-encoding: taken as it is, and found to be no chat
  }
}

function closeSidebarOnPhones() {
  document.body.classList.remove("sidebar-open");
}

// Wiring

ui.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = ui.key.value.trim();
  localStorage.setItem(KEY_STORAGE, state.key);
  ui.signIn.close();
  start();
});
ui.signIn.addEventListener("cancel", (event) => event.preventDefault()); // nothing works without a key
ui.signOut.addEventListener("click", () => {
  localStorage.removeItem(KEY_STORAGE);
  state.key = null;
  location.hash = "";
  location.reload();
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const input = ui.input;
  const text = input.value;
  if (!text.trim() || activeAnswer()) return;
  input.value = "";
  send(text);
});
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  } else if (event.key === "Escape" && activeAnswer()) {
    stop();
  }
});
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  history.replaceState(null, "", "#");
  openSession(null);
});
ui.rename.addEventListener("click", rename);
ui.favorite.addEventListener("click", toggleFavorite);
ui.delete.addEventListener("click", remove);
ui.exportMd.addEventListener("click", () => exportSession("md"));
ui.exportJson.addEventListener("click", () => exportSession("json"));
let searchTimer = null;
ui.search.addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => search(event.target.value.trim()), 200);
});
ui.openSidebar.addEventListener("click", () => document.body.classList.add("sidebar-open"));
ui.closeSidebar.addEventListener("click", closeSidebarOnPhones);
window.addEventListener("hashchange", () => {
  const id = addressedSession();
  if (id !== state.sessionId) openSession(id);
});

start();
