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
