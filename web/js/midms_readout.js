// MIDMs: shows the text a node returns under "ui.text" (the DDIM round-trip error, the anchors
// report) on the node
// itself, drawn on the canvas, so it is never saved as a widget value of the workflow.
// (The current front end's optional Vue node mode does not call onDrawForeground: there the
// number is still the node's "error" / "report" outputs and the server log.)
import { app } from "../../scripts/app.js";

const NODES_WITH_READOUT = new Set(["MIDMsDDIMRoundTrip", "MIDMsAnchorsPreview"]);
const FONT = "12px sans-serif";
const LINE_HEIGHT = 16;
const measure = document.createElement("canvas").getContext("2d");

function wrap(text, width) {
  measure.font = FONT;
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (line && measure.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else {
      line = next;
    }
  }
  if (line) lines.push(line);
  return lines;
}

app.registerExtension({
  name: "MIDMs.Readout",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES_WITH_READOUT.has(nodeData?.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      this.midmsReadout = (message?.text ?? []).join(" ");
      this.midmsReadoutLines = wrap(this.midmsReadout, this.size[0] - 20);
      const needed = (this.computeSize?.()[1] ?? this.size[1]) + this.midmsReadoutLines.length * LINE_HEIGHT + 8;
      if (this.size[1] < needed) this.setSize([this.size[0], needed]);
      this.setDirtyCanvas?.(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      const lines = this.midmsReadoutLines;
      if (!lines?.length || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = FONT;
      ctx.fillStyle = "#9fd49f";
      lines.forEach((text, i) => ctx.fillText(text, 10, this.size[1] - 8 - (lines.length - 1 - i) * LINE_HEIGHT));
      ctx.restore();
    };
  },
});
