// The composer: auto-growing textarea, Enter to send, Shift+Enter for a new line, Stop while
// streaming, and image attachments for multimodal models.
import { html, useEffect, useRef, useState } from "../lib/html.js";
import { ArrowUp, Close, Paperclip, Stop } from "./icons.js";

const MAX_IMAGE_BYTES = 5 * 1024 * 1024;
const MAX_HEIGHT = 220;

const readAsDataURL = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

export function ChatInput({ value, onChange, onSubmit, onStop, streaming, multiModal, onError }) {
  const textarea = useRef(null);
  const fileInput = useRef(null);
  const [images, setImages] = useState([]);

  useEffect(() => {
    const el = textarea.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, MAX_HEIGHT)}px`;
    el.style.overflowY = el.scrollHeight > MAX_HEIGHT ? "auto" : "hidden";
  }, [value]);

  useEffect(() => {
    if (!multiModal) setImages([]);
  }, [multiModal]);

  const addFiles = async (files) => {
    const added = [];
    for (const file of files) {
      if (!file.type.startsWith("image/")) continue;
      if (file.size > MAX_IMAGE_BYTES) {
        onError(`"${file.name}" is larger than 5 MB; attach a smaller image.`);
        continue;
      }
      added.push({ name: file.name, url: await readAsDataURL(file) });
    }
    if (added.length) setImages((list) => [...list, ...added]);
  };

  const canSend = !streaming && (value.trim() !== "" || images.length > 0);
  const submit = () => {
    if (!canSend) return;
    onSubmit(value.trim(), images.map((i) => i.url));
    setImages([]);
  };

  const onKeyDown = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  };

  const onPaste = (e) => {
    if (!multiModal) return;
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  };

  const onDrop = (e) => {
    if (!multiModal || !e.dataTransfer?.files?.length) return;
    e.preventDefault();
    addFiles([...e.dataTransfer.files]);
  };

  return html`
    <form class="composer" data-testid="composer" onDragOver=${(e) => multiModal && e.preventDefault()}
      onDrop=${onDrop} onSubmit=${(e) => { e.preventDefault(); submit(); }}>
      ${images.length > 0 && html`
        <ul class="attachments" aria-label="Attached images">
          ${images.map((img, i) => html`
            <li key=${i} class="attachment-thumb">
              <img src=${img.url} alt=${img.name} />
              <button type="button" class="thumb-remove" aria-label=${`Remove ${img.name}`}
                onClick=${() => setImages((list) => list.filter((_, j) => j !== i))}>
                <${Close} size=${12} />
              </button>
            </li>`)}
        </ul>`}
      <label for="chat-input" class="sr-only">Message</label>
      <textarea id="chat-input" ref=${textarea} rows="1" data-testid="chat-input"
        placeholder="Describe your app…" value=${value} autofocus
        onInput=${(e) => onChange(e.target.value)} onKeyDown=${onKeyDown} onPaste=${onPaste} />
      <div class="composer-bar">
        <div class="composer-left">
          ${multiModal && html`
            <input ref=${fileInput} type="file" accept="image/*" multiple hidden
              data-testid="file-input"
              onChange=${(e) => { addFiles([...e.target.files]); e.target.value = ""; }} />
            <button type="button" class="btn btn-icon" data-testid="attach-button"
              aria-label="Attach images" title="Attach images"
              onClick=${() => fileInput.current.click()}><${Paperclip} /></button>`}
          <span class="hint muted hide-sm">Enter to send · Shift+Enter for a new line</span>
        </div>
        ${streaming
          ? html`<button type="button" class="btn btn-round btn-stop" data-testid="stop-button"
              aria-label="Stop" title="Stop" onClick=${onStop}><${Stop} size=${14} /></button>`
          : html`<button type="submit" class="btn btn-round btn-primary" data-testid="send-button"
              aria-label="Send" title="Send" disabled=${!canSend}><${ArrowUp} /></button>`}
      </div>
    </form>`;
}
