// The page: state, the chat turn (POST /api/chat as SSE) and the sandbox run that follows it.
import {
  ApiError,
  createConversation,
  deleteConversation,
  deleteFile,
  downloadZip,
  getConversation,
  getMe,
  getModels,
  getTemplates,
  listConversations,
  listFiles,
  listVersions,
  logIn,
  logOut,
  patchConversation,
  prepareSandbox,
  publish,
  resendTurn,
  restoreVersion,
  saveHandEdit,
  signUp,
  startGuest,
  streamChat,
  switchTeam,
  undoLast,
  uploadFile,
} from "../lib/api.js";
import {
  html,
  ThemeContext,
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "../lib/html.js";
import { loadSandboxJob, reattachSandbox, runSandboxLive } from "../lib/live.js";
import { loadPrefs, requestConfig, savePrefs } from "../lib/prefs.js";
import {
  loadCurrentConversation,
  loadPendingTurns,
  loadTokens,
  saveCurrentConversation,
  savePendingTurns,
  saveTokens,
} from "../lib/session.js";
import { AccountBar, AuthDialog } from "./Account.js";
import { getAuthOptions, linkFromLocation, RecoveryDialog } from "./Recovery.js";
import { finishSso } from "./Sso.js";
import { UsageMeter } from "./UsageMeter.js";
import { History } from "./History.js";
import { ChatInput } from "./ChatInput.js";
import { ErrorBanner, MessageList } from "./Chat.js";
import { Header, modelKey } from "./Header.js";
import { Panel } from "./Panel.js";
import { ProviderBanner } from "./ProviderStatus.js";
import { SettingsDialog } from "./SettingsDialog.js";
import { DataFiles, WorkspaceBar } from "./Workspace.js";

const DRAFT = "fragments.draft";

/** The user's message of a turn in flight, so a refresh mid-answer loses nothing. */
function saveDraft(history) {
  try {
    const last = history && history[history.length - 1];
    const text = last?.content?.find((p) => p.type === "text")?.text;
    if (text) localStorage.setItem(DRAFT, JSON.stringify({ text }));
    else localStorage.removeItem(DRAFT);
  } catch {
    // storage unavailable
  }
}

function loadDraft() {
  try {
    const draft = JSON.parse(localStorage.getItem(DRAFT) || "null");
    localStorage.removeItem(DRAFT);
    return draft;
  } catch {
    return null;
  }
}

let counter = 0;
const newId = (prefix) => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

const hasBody = (fragment) =>
  Boolean(fragment && (fragment.code || fragment.files?.length || fragment.file_path));

/** The first line of the message's text, as the server titles a conversation it creates. */
function titleOf(content) {
  const text = content?.find((p) => p.type === "text" && p.text)?.text || "";
  return text.trim().split("\n")[0].slice(0, 80);
}

/** A conversation id of the server's shape, for a caller the server keeps nothing for. */
function localConversationId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The history as the API wants it; only complete answers go back to the model. */
function toWire(messages) {
  const wire = [];
  for (const m of messages) {
    if (m.role === "user") wire.push({ role: "user", content: m.content });
    else if (m.final && m.object) {
      wire.push({
        role: "assistant",
        content: [{ type: "text", text: m.object.commentary || "" }],
        object: m.object,
      });
    }
  }
  return wire;
}

function useSystemDark() {
  const query = useMemo(() => window.matchMedia("(prefers-color-scheme: dark)"), []);
  const [dark, setDark] = useState(query.matches);
  useEffect(() => {
    const onChange = (e) => setDark(e.matches);
    query.addEventListener("change", onChange);
    return () => query.removeEventListener("change", onChange);
  }, [query]);
  return dark;
}

export function App() {
  const [prefs, setPrefs] = useState(loadPrefs);
  const [models, setModels] = useState([]);
  const [templates, setTemplates] = useState({});
  const [messages, setMessagesState] = useState([]);
  const [input, setInput] = useState("");
  const [streaming, setStreaming] = useState(false);
  const [error, setError] = useState(null);
  const [selectedId, setSelectedId] = useState(null);
  const [tab, setTab] = useState("code");
  const [settingsOpen, setSettingsOpen] = useState(false);
  const [me, setMe] = useState(null);
  const [history, setHistory] = useState([]);
  const [authMode, setAuthMode] = useState(null);
  // The mailed-link dialog (forgot / reset / confirm / check mail), opened by a link's `#...`.
  const [recovery, setRecovery] = useState(linkFromLocation);
  const [authOptions, setAuthOptions] = useState(null);
  // True once the start-up session (an account, a guest, or nobody) is known.
  const [sessionKnown, setSessionKnown] = useState(false);
  // A message sent while nobody may chat unsigned: it goes out once the person has signed in.
  const pendingSend = useRef(null);
  const sendRef = useRef(null);
  const [currentId, setCurrentId] = useState(null);
  // Bumped after every answer: the month's usage in the top bar is fetched again.
  const [usageTick, setUsageTick] = useState(0);
  // The conversation's uploaded data files; an upload or a workspace action in flight.
  const [dataFiles, setDataFiles] = useState([]);
  const [uploading, setUploading] = useState(false);
  const [workspaceBusy, setWorkspaceBusy] = useState(false);
  // Below 900 px the history is a drawer the header's button opens.
  const [historyOpen, setHistoryOpen] = useState(false);

  // Refs hold what async handlers must read fresh: the messages, the conversation, aborts, and a
  // generation number that "New chat" bumps so late events of an old stream are ignored.
  const messagesRef = useRef(messages);
  const conversationRef = useRef(null);
  const chatAbort = useRef(null);
  const sandboxAborts = useRef(new Map());
  // "<message id>:<template>" of every prepare asked for: one per answer and template.
  const prepares = useRef(new Set());
  const templatesRef = useRef(templates);
  templatesRef.current = templates;
  const generation = useRef(0);
  // Resolves once the session (a guest's or an account's) is known: a turn waits for it, so
  // a message typed right after the page loads is still saved.
  const sessionReady = useRef(null);

  const setMessages = useCallback((update) => {
    messagesRef.current = update(messagesRef.current);
    setMessagesState(messagesRef.current);
  }, []);
  const patch = useCallback(
    (id, change) =>
      setMessages((list) =>
        list.map((m) =>
          m.id === id ? (typeof change === "function" ? change(m) : { ...m, ...change }) : m),
      ),
    [setMessages],
  );

  // ---- preferences, theme, catalogue ------------------------------------------------------

  const updatePrefs = useCallback((change) => {
    setPrefs((old) => {
      const next = { ...old, ...change };
      savePrefs(next);
      return next;
    });
  }, []);

  const systemDark = useSystemDark();
  const theme = prefs.theme || (systemDark ? "dark" : "light");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);

  useEffect(() => {
    getModels()
      .then(setModels)
      .catch((e) => setError({ detail: `The model list did not load: ${e.detail || e.message}` }));
    getTemplates()
      .then(setTemplates)
      .catch((e) => setError({ detail: `The template list did not load: ${e.detail || e.message}` }));
  }, []);

  const model = useMemo(
    () => models.find((m) => modelKey(m) === prefs.model) || models[0] || null,
    [models, prefs.model],
  );
  const customModel = (prefs.customModel || "").trim();
  const multiModal = Boolean(customModel || model?.multiModal);

  // ---- session and history ------------------------------------------------------------------

  const refreshHistory = useCallback(async () => {
    try {
      setHistory((await listConversations()).items);
    } catch {
      // The list is a convenience: chat goes on without it.
    }
  }, []);

  const loadMe = useCallback(async () => {
    // No token (or a dead one): start a guest session the browser keeps.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!loadTokens()) {
        try {
          const pair = await startGuest();
          saveTokens({ ...pair, guest: true });
        } catch {
          // Guests disabled or the server is down: nobody is signed in (after a sign-out too).
          setMe(null);
          return null;
        }
      }
      try {
        const who = await getMe();
        setMe(who);
        return who;
      } catch (e) {
        if (e.status !== 401) return null;
        saveTokens(null);
      }
    }
    return null;
  }, []);

  const flushPending = useCallback(async () => {
    const pending = loadPendingTurns();
    if (!pending.length) return;
    const left = [];
    for (const item of pending) {
      try {
        await resendTurn(item.conversation_id, item.turn);
      } catch (e) {
        if (!e.status || e.status >= 500) left.push(item);
      }
    }
    savePendingTurns(left);
    if (left.length < pending.length) refreshHistory();
  }, [refreshHistory]);

  // `attach`: a job remembered before a reload, followed again instead of a new run.
  const startSandbox = useCallback(async (messageId, fragment, { fragmentId, restart, attach } = {}) => {
    const gen = generation.current;
    sandboxAborts.current.get(messageId)?.abort();
    const controller = new AbortController();
    sandboxAborts.current.set(messageId, controller);
    patch(messageId, { sandbox: { status: "running", phase: null } });
    const body = { fragment };
    if (conversationRef.current) body.conversation_id = conversationRef.current;
    if (fragmentId) body.fragment_id = fragmentId;
    if (restart) body.restart = true;
    try {
      const live = {
        signal: controller.signal,
        onPhase: (phase) => {
          if (gen === generation.current) {
            patch(messageId, (m) => ({ ...m, sandbox: { ...m.sandbox, phase } }));
          }
        },
      };
      const result = await (attach
        ? reattachSandbox(attach, body, live)
        : runSandboxLive(body, live));
      if (gen === generation.current) patch(messageId, { sandbox: { status: "done", result } });
    } catch (e) {
      if (e.name === "AbortError" || gen !== generation.current) return;
      patch(messageId, {
        sandbox: { status: "error", error: e.detail || "The sandbox could not be reached." },
      });
    } finally {
      if (sandboxAborts.current.get(messageId) === controller) {
        sandboxAborts.current.delete(messageId);
      }
    }
  }, [patch]);

  // While the answer streams, as soon as its template is known to be a web app's, the
  // conversation's sandbox is prepared and its page starts loading (hidden) in the preview, so
  // the run at the end is an in-place edit of a page already open. Best effort: a failed
  // prepare changes nothing, the run then starts the sandbox as it always did.
  const prepareFor = useCallback((messageId, template) => {
    const conversation = conversationRef.current;
    if (!conversation || !template || !templatesRef.current[template]?.port) return;
    const key = `${messageId}:${template}`;
    if (prepares.current.has(key)) return;
    prepares.current.add(key);
    const gen = generation.current;
    prepareSandbox({ template, conversation_id: conversation })
      .then((prepared) => {
        if (!prepared?.url || gen !== generation.current) return;
        patch(messageId, (m) => (m.object?.template === template && (!m.sandbox
          || m.sandbox.status === "running") ? { ...m, prepared } : m));
      })
      .catch(() => {});
  }, [patch]);

  // ---- one chat turn ------------------------------------------------------------------------

  const startTurn = useCallback(async (history) => {
    if (!model && !customModel) {
      setError({ detail: "Pick a model first." });
      return;
    }
    const gen = generation.current;
    const alive = () => gen === generation.current;
    if (sessionReady.current) await sessionReady.current;
    const assistant = {
      id: newId("a"), role: "assistant", content: [], object: null,
      streaming: true, final: false, provider: null, usage: null, sandbox: null,
    };
    setMessages(() => [...history, assistant]);
    setError(null);
    setStreaming(true);

    const controller = new AbortController();
    chatAbort.current = controller;
    const body = {
      messages: toWire(history),
      template: prefs.template || "auto",
      model: {
        id: customModel || model.id,
        providerId: model?.providerId,
        provider: model?.provider,
      },
      config: requestConfig(prefs.config),
    };
    // A new conversation gets its id before the answer streams (else it comes with `done`),
    // so that its sandbox can be prepared during the stream; not for the interpreter.
    let madeHere = null;
    const pinned = prefs.template || "auto";
    if (!conversationRef.current && (pinned === "auto" || templates[pinned]?.port)) {
      if (!me && !loadTokens()) {
        // No session at all: the server keeps nothing and takes the id as it is.
        conversationRef.current = localConversationId();
      } else {
        try {
          madeHere = (await createConversation(titleOf(history[history.length - 1]?.content))).id;
          if (alive()) conversationRef.current = madeHere;
        } catch {
          // The chat makes the conversation itself: only the early preview is lost.
        }
      }
      if (!alive()) return;
    }
    if (conversationRef.current) body.conversation_id = conversationRef.current;
    body.turn_id = newId("t");
    saveDraft(history);

    let finalFragment = null;
    let fragmentId = null;
    let done = false;
    let failure = null;
    let stopped = false;
    let shown = false;
    try {
      await streamChat(body, {
        signal: controller.signal,
        onEvent: ({ event, data }) => {
          if (!alive()) return;
          switch (event) {
            case "provider":
              // The first fallback's reason stays: the banner explains why the model asked
              // for did not answer, however many models were tried after it.
              patch(assistant.id, (m) => ({
                ...m,
                provider: data,
                fallback: m.fallback || (data?.fallback && data.from
                  ? { from: data.from, reason: data.reason } : null),
              }));
              break;
            case "partial":
              patch(assistant.id, { object: data });
              prepareFor(assistant.id, data?.template);
              if (!shown && hasBody(data)) {
                // Open the panel as soon as there is code to watch growing.
                shown = true;
                setSelectedId(assistant.id);
                setTab("code");
              }
              break;
            case "reset":
              // Another model restarts the answer: the partial one is dropped.
              patch(assistant.id, { object: null });
              break;
            case "fragment":
              finalFragment = data;
              patch(assistant.id, {
                object: data, final: true, sandbox: { status: "running", phase: null },
              });
              setSelectedId(assistant.id);
              setTab("preview");
              break;
            case "usage":
              patch(assistant.id, { usage: data });
              break;
            case "done":
              done = true;
              if (data?.conversation_id) {
                conversationRef.current = data.conversation_id;
                setCurrentId(data.conversation_id);
                saveCurrentConversation(data.conversation_id);
              }
              // Only a stored fragment can be named to the sandbox (its result is stored too).
              fragmentId = (data?.saved && data?.fragment_id) || null;
              if (data?.saved === false && me && finalFragment && data?.conversation_id) {
                // The database was down: keep the turn and re-send it when it is back.
                savePendingTurns([...loadPendingTurns(), {
                  conversation_id: data.conversation_id,
                  turn: {
                    turn_id: body.turn_id,
                    message: body.messages[body.messages.length - 1],
                    fragment: finalFragment,
                    fragment_id: data.fragment_id,
                  },
                }]);
              }
              patch(assistant.id, { fragmentId });
              break;
            case "error":
              failure = {
                detail: data?.detail || "The model failed to answer.",
                code: data?.error,
              };
              break;
            default:
              break; // events this page doesn't know yet
          }
        },
      });
      if (!failure && !done && !finalFragment) {
        failure = { detail: "The answer ended before it was complete." };
      }
    } catch (e) {
      if (e.name === "AbortError") stopped = true;
      else if (e instanceof ApiError) failure = { detail: e.detail, status: e.status, code: e.code };
      else failure = { detail: `Something went wrong in the page: ${e.message}` };
    }
    if (!alive()) return;
    chatAbort.current = null;
    if (madeHere && !done && !finalFragment) {
      // Nothing of the turn was stored: the conversation made for it would stay empty.
      deleteConversation(madeHere).catch(() => {});
      if (conversationRef.current === madeHere) conversationRef.current = null;
    }
    setStreaming(false);
    if (done) {
      saveDraft(null);
      refreshHistory();
      setUsageTick((n) => n + 1);
    }
    const current = messagesRef.current.find((m) => m.id === assistant.id);
    const empty = !current?.object?.commentary && !hasBody(current?.object);
    if ((failure || stopped) && empty && !finalFragment) {
      setMessages((list) => list.filter((m) => m.id !== assistant.id));
      setSelectedId((id) => (id === assistant.id ? null : id));
    } else {
      patch(assistant.id, { streaming: false, stopped: stopped && !finalFragment });
    }
    if (failure?.status === 401 && !loadTokens()) {
      // Nobody is signed in and this server wants someone to be: the sign-in dialog instead
      // of an error, with the message back in the box to send once signed in.
      const asked = history[history.length - 1];
      setMessages((list) => list.filter((m) => m.id !== assistant.id && m.id !== asked?.id));
      const text = (asked?.content || []).filter((c) => c.type === "text").map((c) => c.text);
      setInput(text.join("\n"));
      pendingSend.current = { text: text.join("\n"), images: [] };
      setAuthMode("login");
      getAuthOptions().then(setAuthOptions);
    } else if (failure) {
      setError({
        detail: failure.detail,
        kind: failure.status === 429 ? "warning" : "error",
        canRetry: true,
      });
    }
    // The sandbox runs once the stream has closed, so the conversation id of a first turn
    // (sent in `done`) ties the sandbox to this conversation.
    if (finalFragment) startSandbox(assistant.id, finalFragment, { fragmentId });
  }, [model, customModel, prefs.template, prefs.config, patch, setMessages, startSandbox, me,
    refreshHistory, templates, prepareFor]);

  const send = useCallback((text, images = []) => {
    if (streaming) return;
    const content = [];
    if (text) content.push({ type: "text", text });
    for (const image of images) content.push({ type: "image", image });
    if (content.length === 0) return;
    if (!me && !loadTokens() && authOptions && !authOptions.guests) {
      // Guests are off here: ask for a sign-in first; the typed message stays in the box and
      // is sent once the person is in.
      pendingSend.current = { text, images };
      setAuthMode("login");
      return;
    }
    setInput("");
    startTurn([...messagesRef.current, { id: newId("u"), role: "user", content }]);
  }, [streaming, startTurn, me, authOptions]);
  sendRef.current = send;

  // Signed in after a message was held back for it: send it now (it is still in the box).
  useEffect(() => {
    if (!me || !pendingSend.current) return;
    const { text, images } = pendingSend.current;
    pendingSend.current = null;
    sendRef.current?.(text, images);
  }, [me]);

  const retry = useCallback(() => {
    const list = messagesRef.current;
    let last = -1;
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].role === "user") {
        last = i;
        break;
      }
    }
    if (last >= 0) startTurn(list.slice(0, last + 1));
  }, [startTurn]);

  const stop = useCallback(() => chatAbort.current?.abort(), []);

  const newChat = useCallback(() => {
    generation.current += 1;
    chatAbort.current?.abort();
    chatAbort.current = null;
    for (const controller of sandboxAborts.current.values()) controller.abort();
    sandboxAborts.current.clear();
    conversationRef.current = null;
    setCurrentId(null);
    saveCurrentConversation(null);
    setMessages(() => []);
    setStreaming(false);
    setError(null);
    setSelectedId(null);
    setInput("");
    setDataFiles([]);
    document.getElementById("chat-input")?.focus();
  }, [setMessages]);

  const selectFragment = useCallback((id) => {
    const message = messagesRef.current.find((m) => m.id === id);
    setSelectedId(id);
    setTab(message?.sandbox ? "preview" : "code");
  }, []);

  const rerun = useCallback((id) => {
    const message = messagesRef.current.find((m) => m.id === id);
    if (message?.object) {
      startSandbox(id, message.object, { fragmentId: message.fragmentId, restart: true });
    }
  }, [startSandbox]);

  const openConversation = useCallback(async (id) => {
    let detail;
    try {
      detail = await getConversation(id);
    } catch (e) {
      if (e.status === 404) saveCurrentConversation(null);
      else setError({ detail: `The conversation did not load: ${e.detail || e.message}` });
      return;
    }
    newChat();
    setHistoryOpen(false);
    conversationRef.current = detail.id;
    setCurrentId(detail.id);
    saveCurrentConversation(detail.id);
    // The data files come back with the conversation (and go into its next sandbox).
    listFiles(detail.id).then((list) => {
      if (conversationRef.current === detail.id) setDataFiles(list.items);
    }).catch(() => {});
    const restored = detail.messages.map((m) => (m.role === "user"
      ? { id: newId("u"), role: "user", content: m.content }
      : {
        id: newId("a"), role: "assistant", content: m.content, object: m.object || null,
        streaming: false, final: true, provider: null, usage: null, sandbox: null,
        fragmentId: m.fragment_id || null,
      }));
    setMessages(() => restored);
    const last = [...restored].reverse().find((m) => m.object);
    if (last) {
      setSelectedId(last.id);
      setTab("preview");
      // The old sandbox may have expired: run the fragment again to restore the preview.
      // A run still going when the page was reloaded is followed again, not repeated.
      const running = loadSandboxJob();
      const attach = running?.conversationId === detail.id ? running : undefined;
      if (detail.owned) startSandbox(last.id, last.object, { fragmentId: last.fragmentId, attach });
      else patch(last.id, { sandbox: null });
    }
  }, [newChat, setMessages, startSandbox, patch]);

  useEffect(() => {
    (async () => {
      const draft = loadDraft();
      // A return from single sign-on first: its tokens are the session loadMe then finds.
      getAuthOptions().then(setAuthOptions);
      sessionReady.current = finishSso((detail) => setError({ detail })).then(loadMe);
      const who = await sessionReady.current;
      setSessionKnown(true);
      if (!who) return;
      await flushPending();
      refreshHistory();
      const current = loadCurrentConversation();
      if (current) await openConversation(current);
      if (draft?.text) setInput(draft.text);
    })();
    const timer = setInterval(flushPending, 30000);
    return () => clearInterval(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const submitAuth = useCallback(async (mode, email, password) => {
    const before = loadTokens();
    let pair;
    try {
      pair = mode === "signup"
        ? await signUp(email, password, before?.guest ? before.access_token : null)
        : await logIn(email, password);
    } catch (e) {
      if (e.code !== "email_unconfirmed") throw e;
      setAuthMode(null);
      setRecovery({ kind: "check-mail", email });
      return;
    }
    if (pair.confirmation_required) {
      // No tokens until the address is confirmed; a claimed guest's token ended server-side.
      setAuthMode(null);
      setRecovery({ kind: "check-mail", email: pair.email });
      if (before?.guest) {
        saveTokens(null);
        newChat();
        setHistory([]);
        await loadMe();
      }
      return;
    }
    saveTokens({ ...pair, guest: false });
    setAuthMode(null);
    if (mode === "login") newChat();
    await loadMe();
    refreshHistory();
  }, [loadMe, refreshHistory, newChat]);

  // A mailed link signed the user in: the same as a sign-in, once the page's own start-up
  // session is settled (it must not overwrite these tokens with a guest's).
  const linkSignedIn = useCallback(async (pair) => {
    if (sessionReady.current) await sessionReady.current;
    saveTokens({ ...pair, guest: false });
    newChat();
    await loadMe();
    refreshHistory();
  }, [loadMe, refreshHistory, newChat]);

  // A link opened in a tab that already shows the app changes only the `#...` part.
  useEffect(() => {
    const onHash = () => {
      const link = linkFromLocation();
      if (link) setRecovery(link);
    };
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  const openForgot = useCallback((email) => {
    setAuthMode(null);
    setRecovery({ kind: "forgot", email });
    getAuthOptions().then(setAuthOptions);
  }, []);

  const signOut = useCallback(async () => {
    const tokens = loadTokens();
    try {
      await logOut(tokens?.refresh_token);
    } catch {
      // Signing out locally is what matters; the server's session expires anyway.
    }
    saveTokens(null);
    newChat();
    setHistory([]);
    await loadMe();
    refreshHistory();
  }, [loadMe, refreshHistory, newChat]);

  const changeTeam = useCallback(async (teamId) => {
    try {
      const pair = await switchTeam(teamId);
      saveTokens({ ...loadTokens(), ...pair });
      newChat();
      await loadMe();
      refreshHistory();
    } catch (e) {
      setError({ detail: e.detail || "The team could not be switched." });
    }
  }, [loadMe, refreshHistory, newChat]);

  const share = useCallback(async (id, shared) => {
    try {
      await patchConversation(id, { shared });
    } catch (e) {
      setError({ detail: e.detail || "Sharing did not change." });
    }
    refreshHistory();
  }, [refreshHistory]);

  const remove = useCallback(async (id) => {
    try {
      await deleteConversation(id);
    } catch (e) {
      setError({ detail: e.detail || "The conversation was not deleted." });
    }
    if (id === conversationRef.current) newChat();
    refreshHistory();
  }, [refreshHistory, newChat]);

  // ---- workspace: data files, undo, versions, ZIP, publish ------------------------------------

  /** The conversation to upload into: the current one, or a new (stored) one. */
  const ensureConversation = useCallback(async () => {
    if (conversationRef.current) return conversationRef.current;
    const id = (await createConversation("")).id;
    conversationRef.current = id;
    setCurrentId(id);
    saveCurrentConversation(id);
    return id;
  }, []);

  const uploadData = useCallback(async (files) => {
    setUploading(true);
    try {
      const id = await ensureConversation();
      for (const file of files) {
        try {
          const row = await uploadFile(id, file);
          setDataFiles((list) => [...list.filter((f) => f.name !== row.name), row]);
        } catch (e) {
          setError({ detail: `${file.name}: ${e.detail || e.message}`, kind: "warning" });
        }
      }
    } catch (e) {
      setError({ detail: e.detail || "The files could not be uploaded." });
    } finally {
      setUploading(false);
    }
  }, [ensureConversation]);

  const removeData = useCallback(async (name) => {
    try {
      await deleteFile(conversationRef.current, name);
      setDataFiles((list) => list.filter((f) => f.name !== name));
    } catch (e) {
      setError({ detail: e.detail || "The file was not removed." });
    }
  }, []);

  const undo = useCallback(async () => {
    const list = messagesRef.current;
    let cut = list.length;
    if (cut && list[cut - 1].role === "assistant") cut--;
    if (cut && list[cut - 1].role === "user") cut--;
    if (cut === list.length) return;
    const last = list[list.length - 1];
    if (conversationRef.current && me) {
      setWorkspaceBusy(true);
      try {
        await undoLast(conversationRef.current, last.fragmentId || undefined);
      } catch (e) {
        if (e.code !== "nothing_to_undo") {
          setError({ detail: e.detail || "Nothing was undone." });
          return;
        }
      } finally {
        setWorkspaceBusy(false);
      }
    }
    const kept = list.slice(0, cut);
    setMessages(() => kept);
    const previous = [...kept].reverse().find((m) => m.object);
    setSelectedId(previous ? previous.id : null);
    if (previous && !previous.sandbox) {
      startSandbox(previous.id, previous.object, { fragmentId: previous.fragmentId });
    }
  }, [me, setMessages, startSandbox]);

  const loadVersions = useCallback(() => listVersions(conversationRef.current), []);

  const restore = useCallback(async (fragmentId) => {
    setWorkspaceBusy(true);
    try {
      const restored = await restoreVersion(conversationRef.current, fragmentId);
      const user = { id: newId("u"), role: "user", content: restored.message.content };
      const answer = {
        id: newId("a"), role: "assistant",
        content: [{ type: "text", text: restored.fragment.commentary || "" }],
        object: restored.fragment, streaming: false, final: true, provider: null, usage: null,
        sandbox: null, fragmentId: restored.fragment_id,
      };
      setMessages((list) => [...list, user, answer]);
      setSelectedId(answer.id);
      setTab("preview");
      startSandbox(answer.id, restored.fragment, { fragmentId: restored.fragment_id });
    } catch (e) {
      setError({ detail: e.detail || "The version was not restored." });
    } finally {
      setWorkspaceBusy(false);
    }
  }, [setMessages, startSandbox]);

  // Code edited by hand becomes the current version (stored when the conversation is), shown
  // as an exchange like a restore, and runs; the next turn's history carries it. Resolves true
  // when saved; on failure the editor keeps the edits.
  const saveEdit = useCallback(async (message, fragment) => {
    let note = "Edited the code by hand";
    let fragmentId = null;
    let saved = fragment;
    if (me && conversationRef.current) {
      try {
        const stored = await saveHandEdit(conversationRef.current, {
          fragment, based_on: message.fragmentId || undefined, turn_id: newId("e"),
        });
        note = stored.message.content[0].text;
        fragmentId = stored.fragment_id;
        saved = stored.fragment;
      } catch (e) {
        setError({ detail: e.detail || "The edited code was not saved." });
        return false;
      }
    }
    const user = { id: newId("u"), role: "user", content: [{ type: "text", text: note }] };
    const answer = {
      id: newId("a"), role: "assistant", content: [{ type: "text", text: saved.commentary || "" }],
      object: saved, streaming: false, final: true, provider: null, usage: null, sandbox: null,
      fragmentId,
    };
    setError(null);
    setMessages((list) => [...list, user, answer]);
    setSelectedId(answer.id);
    setTab("preview");
    startSandbox(answer.id, saved, fragmentId ? { fragmentId } : {});
    return true;
  }, [me, setMessages, startSandbox]);

  const download = useCallback(async (message) => {
    try {
      const { blob, name } = await downloadZip({
        conversationId: conversationRef.current,
        fragmentId: message.fragmentId,
        fragment: message.object,
      });
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = name;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
    } catch (e) {
      setError({ detail: e.detail || "The ZIP could not be made." });
    }
  }, []);

  const publishApp = useCallback(async (sandboxId, duration) => {
    try {
      return await publish(sandboxId, duration);
    } catch (e) {
      setError({ detail: e.detail || "The app was not published." });
      return null;
    }
  }, []);

  const selected = messages.find((m) => m.id === selectedId && m.object) || null;
  const lastFragment = [...messages].reverse().find((m) => m.object && m.final) || null;

  return html`
    <${ThemeContext.Provider} value=${theme}>
    <div class="app">
      <${Header} models=${models} model=${model} templates=${templates} prefs=${prefs}
        theme=${theme}
        account=${html`<${UsageMeter} me=${me} tick=${usageTick} />
          <${AccountBar} me=${me} ready=${sessionKnown} onOpenAuth=${setAuthMode}
          onSignOut=${signOut}
          onSwitchTeam=${changeTeam} />`}
        onPrefs=${updatePrefs} onNewChat=${newChat}
        onToggleHistory=${me ? () => setHistoryOpen((open) => !open) : null}
        historyOpen=${historyOpen}
        onOpenSettings=${() => setSettingsOpen(true)}
        onToggleTheme=${() => updatePrefs({ theme: theme === "dark" ? "light" : "dark" })} />
      <main class=${`layout${selected ? " with-panel" : ""}`}>
        <${History} open=${Boolean(me)} items=${history} currentId=${currentId}
          drawer=${historyOpen} onClose=${() => setHistoryOpen(false)}
          onOpen=${openConversation} onShare=${share} onDelete=${remove} />
        <section class="chat" aria-label="Chat">
          <${MessageList} messages=${messages} models=${models} selectedId=${selectedId} streaming=${streaming}
            onSelect=${selectFragment}
            onExample=${(text) => {
              setInput(text);
              document.getElementById("chat-input")?.focus();
            }} />
          <div class="chat-bottom">
            <${ProviderBanner} providerId=${customModel ? null : model?.providerId}
              providerName=${model?.provider} />
            <${ErrorBanner} error=${error} onRetry=${retry} onDismiss=${() => setError(null)} />
            ${messages.length > 0 && html`<${WorkspaceBar} stored=${Boolean(me && currentId)}
              canUndo=${!streaming && messages.length > 0} message=${selected || lastFragment}
              busy=${workspaceBusy} onUndo=${undo} loadVersions=${loadVersions}
              onRestore=${restore} onDownload=${download} onPublish=${publishApp} />`}
            ${me && html`<${DataFiles} files=${dataFiles} busy=${uploading} disabled=${streaming}
              onUpload=${uploadData} onRemove=${removeData} />`}
            <${ChatInput} value=${input} onChange=${setInput} onSubmit=${send} onStop=${stop}
              streaming=${streaming} multiModal=${multiModal}
              onError=${(detail) => setError({ detail, kind: "warning" })} />
          </div>
        </section>
        ${selected && html`<${Panel} message=${selected} tab=${tab} onTab=${setTab}
          onClose=${() => setSelectedId(null)} onRerun=${rerun}
          onSaveEdit=${streaming ? null : saveEdit} />`}
      </main>
      <${AuthDialog} mode=${authMode} onMode=${setAuthMode} onClose=${() => setAuthMode(null)}
        onSubmit=${submitAuth} onForgot=${openForgot} />
      <${RecoveryDialog} view=${recovery} options=${authOptions} onView=${setRecovery}
        onClose=${() => setRecovery(null)} onSignedIn=${linkSignedIn}
        onSignIn=${() => {
          setRecovery(null);
          setAuthMode("login");
        }} />
      <${SettingsDialog} open=${settingsOpen} prefs=${prefs} onPrefs=${updatePrefs} model=${model}
        onClose=${() => setSettingsOpen(false)} />
    </div>
    <//>`;
}
