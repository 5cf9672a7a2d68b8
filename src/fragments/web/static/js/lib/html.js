// One place binds htm to Preact, so components import `html` and hooks from here.
import { createContext, h, render, Fragment } from "../../vendor/preact.js";
import htm from "../../vendor/htm.js";

export const html = htm.bind(h);
export { createContext, h, render, Fragment };

/** The resolved colour theme, "light" or "dark", for components that paint outside CSS. */
export const ThemeContext = createContext("light");
export {
  useCallback,
  useContext,
  useEffect,
  useId,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
} from "../../vendor/preact-hooks.js";

// Dialogs the page closed itself: their `close` event is not the person dismissing them.
const closedByPage = new WeakSet();

/** Close a <dialog> because the page's state says so (not the person: no `onClose` follows). */
export function closeDialog(el) {
  closedByPage.add(el);
  el.close();
}

/**
 * A <dialog>'s `close` event handler that calls `onClose` only when the person closed it (Escape,
 * a form of method "dialog"). The event is dispatched after `close()` returns, so one caused by
 * the page closing a view would otherwise arrive after the next view was set, and close that.
 */
export function onDialogClosed(onClose) {
  return (event) => {
    const el = event.currentTarget;
    if (closedByPage.delete(el)) return;
    if (!el.open) onClose();
  };
}
