// Started by index.html under `seqviz serve`: the dashboard on the live websocket.
import { render } from "./index.js";

render({ source: "websocket" });
