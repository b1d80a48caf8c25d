/**
 * The guest side of TensorBoard's plugin IPC (the host is the TensorBoard page
 * around our iframe). TensorBoard never published its guest library, so this
 * is the protocol written out: a MessageChannel handed to the parent with
 * "experimental.bootstrap", then JSON messages {type, id, payload, error, isReply}.
 */

const listeners = new Map();
let port = null;

function connect() {
  if (port || window.parent === window) return;
  const channel = new MessageChannel();
  port = channel.port1;
  port.onmessage = async (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!message || message.isReply) return;
    let payload = null;
    let error = null;
    const listener = listeners.get(message.type);
    if (listener) {
      try {
        payload = (await listener(message.payload)) ?? null;
      } catch (e) {
        error = String(e);
      }
    }
    port.postMessage(JSON.stringify({ type: message.type, id: message.id, payload, error, isReply: true }));
  };
  window.parent.postMessage("experimental.bootstrap", "*", [channel.port2]);
}

/** Calls `callback` whenever TensorBoard reloads its data (its reload button or auto-reload). */
export function onDataReloaded(callback) {
  listeners.set("experimental.DataReloaded", callback);
  connect();
}
