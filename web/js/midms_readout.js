// MIDMs: the text a node returns under "ui.text" (the DDIM round-trip error, the anchors report)
// shown on the node itself, in a read-only text box the front end draws: its own multiline text
// widget, which the classic canvas places over the node and the Vue node view renders as a
// textarea.
//
// The box is added to each node in the `nodeCreated` hook (no prototype patching) and filled by
// the node's `onExecuted` callback. It is never saved: not in the workflow's widgets_values
// (widget.serialize = false for current front ends; stripped in onSerialize for the 2024 UI,
// whose LiteGraph saves every widget), and not in the API prompt (options.serialize = false).
// It is the node's last widget, so the order of the saved widgets is unchanged.
import { app } from "../../scripts/app.js";

const READOUTS = {
  MIDMsDDIMRoundTrip: "round-trip error: shown here after a run",
  MIDMsAnchorsPreview: "anchors report: shown here after a run",
};
const READOUT_WIDGET = "midms_readout";

function addReadout(node, placeholder) {
  // the front end's own multiline text widget (app.widgets.STRING: 2024 UI and current front
  // ends alike), which every node view knows how to draw
  const { widget } = app.widgets.STRING(node, READOUT_WIDGET,
    ["STRING", { multiline: true, default: "", placeholder }], app);
  const box = widget.element ?? widget.inputEl;
  if (box) {
    box.readOnly = true;
    box.placeholder = placeholder;
    box.classList.add("midms-readout");
  }
  widget.options ??= {};
  widget.options.serialize = false;  // not in the API prompt
  widget.options.read_only = true;   // the Vue node view's textarea
  widget.serialize = false;  // not in widgets_values (current front ends)
  widget.label = "readout";

  const onSerialize = node.onSerialize;
  node.onSerialize = function (o) {
    onSerialize?.apply(this, arguments);
    // the 2024 LiteGraph saves every widget's value by index: drop this one's
    const i = this.widgets?.indexOf(widget) ?? -1;
    if (i >= 0 && Array.isArray(o.widgets_values) && o.widgets_values.length > i) {
      o.widgets_values.splice(i, 1);
    }
  };

  const onExecuted = node.onExecuted;
  node.onExecuted = function (message) {
    onExecuted?.apply(this, arguments);
    const text = (message?.text ?? []).join("\n");
    widget.value = text;
    this.setDirtyCanvas?.(true, true);
  };

  // a node added by hand was sized before this widget existed
  const need = node.computeSize?.();
  if (need && (node.size[1] < need[1] || node.size[0] < need[0])) {
    node.setSize([Math.max(node.size[0], need[0]), Math.max(node.size[1], need[1])]);
  }
  return widget;
}

app.registerExtension({
  name: "MIDMs.Readout",
  nodeCreated(node) {
    const type = node.comfyClass ?? node.constructor?.comfyClass ?? node.type;
    if (type in READOUTS) addReadout(node, READOUTS[type]);
  },
});
