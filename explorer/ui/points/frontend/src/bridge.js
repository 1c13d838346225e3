// The Streamlit custom-component protocol (components v1), without React.
//
// The app's page hosts this file in an iframe and talks to it with window.postMessage:
//   iframe -> page  {isStreamlitMessage: true, type: "streamlit:componentReady", apiVersion: 1}
//   page -> iframe  {type: "streamlit:render", args, dfs, disabled, theme}  (every script run;
//                   bytes arguments arrive as Uint8Array inside `args`)
//   iframe -> page  {isStreamlitMessage: true, type: "streamlit:setComponentValue", value,
//                    dataType: "json"}  (starts a script run; Python gets `value`)
//   iframe -> page  {isStreamlitMessage: true, type: "streamlit:setFrameHeight", height}

const API_VERSION = 1;

function send(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
}

export function setComponentValue(value) {
  send("streamlit:setComponentValue", { value, dataType: "json" });
}

export function setFrameHeight(height) {
  send("streamlit:setFrameHeight", { height });
}

// Calls onRender(args, disabled, theme) on every render message, then announces readiness.
export function connect(onRender) {
  window.addEventListener("message", (event) => {
    const msg = event.data;
    if (!msg || msg.type !== "streamlit:render") return;
    onRender(msg.args || {}, !!msg.disabled, msg.theme);
  });
  send("streamlit:componentReady", { apiVersion: API_VERSION });
}
