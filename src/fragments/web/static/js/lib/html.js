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

/**
 * A <dialog>'s `close` event handler that calls `onClose` only if the dialog is still closed when
 * the event arrives: the event is dispatched later than `close()`, and a dialog reopened in the
 * meantime (a new view shown at once) must not be closed by the stale event.
 */
export function onDialogClosed(onClose) {
  return (event) => {
    if (!event.currentTarget.open) onClose();
  };
}
