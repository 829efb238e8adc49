// ClipboardButton (jupyter_ft/widgets/clipboard.py): copies model.text to the clipboard inside the
// click's user gesture and, in JupyterLab, asks the jupyter-ft extension to insert it as a new cell.
async function write(model) {
  try {
    await navigator.clipboard.writeText(model.get("text"));
    model.set("status", "copied");
  } catch (err) {
    model.set("status", "not copied: " + err);
  }
  model.save_changes();
}
function initialize({ model }) {
  const onRequest = () => write(model);
  model.on("change:request", onRequest);
  return () => model.off("change:request", onRequest);
}
function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button jft-copy";
  const sync = () => {
    button.textContent = model.get("description");
    button.disabled = model.get("disabled");
    button.title = model.get("tooltip");
  };
  sync();
  model.on("change:description change:disabled change:tooltip", sync);
  button.addEventListener("click", () => {
    if (button.disabled) return;
    write(model);
    if (model.get("insert_cell")) {
      const ev = new CustomEvent("jupyter-ft:insert-cell", {
        detail: { text: model.get("text") }, bubbles: true, cancelable: true, composed: true,
      });
      el.dispatchEvent(ev);  // synchronous: a listener has answered when it returns
      if (ev.defaultPrevented) {
        model.set("inserted", model.get("inserted") + 1);
        model.save_changes();  // reaches the kernel before the click message below
      }
    }
    model.send({ event: "click" });
  });
  el.appendChild(button);
  return () => model.off("change:description change:disabled change:tooltip", sync);
}
export default { initialize, render };
