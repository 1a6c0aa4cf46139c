// A farm's call graph (src/protocol/farm-graph.ts) laid out by dagre and drawn as SVG:
// roles, the or/par/ref intermediaries, imports from outside, exports, and the crash
// rules (dashed: the ref's other target, taken when the instance crashes). A ref's edge
// goes to the node it is bound to now (the provider's `refs`), so a rebinding redraws it.
import dagre from '@dagrejs/dagre';
import { h } from 'preact';
import htm from 'htm';

const html = htm.bind(h);

const SIZE = { instance: [150, 48], import: [150, 48], or: [70, 40], par: [70, 40], ref: [110, 40], export: [150, 36] };

/** Nodes and edges of the picture, ref edges following the current binding. */
export function graphModel(status) {
  const graph = status.graph;
  const nodes = graph.nodes.map((n) => ({ id: n.id, kind: n.kind, service: n.service, label: n.id, sub: n.kind === 'import' ? n.url : n.kind === 'instance' ? n.service : n.kind }));
  for (const e of graph.exports) nodes.push({ id: `export:${e.path}`, kind: 'export', label: e.path, sub: `export /x/${graph.name}/…` });
  const edges = [];
  for (const n of graph.nodes) {
    if (n.kind === 'instance') for (const [name, to] of Object.entries(n.imports)) edges.push({ from: n.id, to, label: name, kind: 'import' });
    else if (n.kind === 'or' || n.kind === 'par') for (const to of n.targets) edges.push({ from: n.id, to, label: n.kind, kind: n.kind });
    else if (n.kind === 'ref') edges.push({ from: n.id, to: status.refs?.[n.id] ?? n.target, label: 'bound', kind: 'ref' });
  }
  for (const e of graph.exports) edges.push({ from: `export:${e.path}`, to: e.node, label: 'export', kind: 'export' });
  for (const rule of graph.crashRules) {
    for (const a of rule.actions) {
      if (a.kind === 'update') edges.push({ from: a.ref, to: a.target, label: `if ${rule.instance} crashes`, kind: 'crash' });
    }
  }
  const known = new Set(nodes.map((n) => n.id));
  return { nodes, edges: edges.filter((e) => known.has(e.from) && known.has(e.to)) };
}

export function layout(model) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'LR', nodesep: 28, ranksep: 70, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of model.nodes) {
    const [width, height] = SIZE[n.kind] ?? [140, 44];
    g.setNode(n.id, { width, height });
  }
  model.edges.forEach((e, i) => g.setEdge(e.from, e.to, { label: e.label, width: e.label.length * 6.5, height: 14, labelpos: 'c' }, `e${i}`));
  dagre.layout(g);
  const size = g.graph();
  return {
    width: Math.ceil(size.width ?? 100),
    height: Math.ceil(size.height ?? 100),
    nodes: model.nodes.map((n) => ({ ...n, ...g.node(n.id) })),
    edges: model.edges.map((e, i) => ({ ...e, ...g.edge({ v: e.from, w: e.to, name: `e${i}` }) })),
  };
}

function shape(n) {
  const x = n.x - n.width / 2;
  const y = n.y - n.height / 2;
  if (n.kind === 'or' || n.kind === 'par') {
    const pts = [[n.x, y], [x + n.width, n.y], [n.x, y + n.height], [x, n.y]].map((p) => p.join(',')).join(' ');
    return html`<polygon points=${pts} class="node-shape" />`;
  }
  return html`<rect x=${x} y=${y} width=${n.width} height=${n.height} rx=${n.kind === 'ref' ? 18 : 6} class="node-shape" />`;
}

export function FarmGraph({ status }) {
  const laid = layout(graphModel(status));
  return html`<figure class="graph">
    <svg viewBox=${`0 0 ${laid.width} ${laid.height}`} style=${`width:100%;max-width:${laid.width}px;height:auto`} role="img" aria-label=${`call graph of farm ${status.name}`} data-farm=${status.name}>
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="10" markerHeight="10" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" class="arrow" /></marker>
      </defs>
      ${laid.edges.map(
        (e) => html`<g class=${`edge edge-${e.kind}`}>
          <path d=${(e.points ?? []).map((p, i) => `${i === 0 ? 'M' : 'L'}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ')} marker-end="url(#arrow)" />
          ${e.x === undefined ? null : html`<text x=${e.x} y=${e.y + 4} text-anchor="middle" class="edge-label">${e.label}</text>`}
        </g>`,
      )}
      ${laid.nodes.map(
        (n) => html`<g class=${`node node-${n.kind}`} data-node=${n.id}>
          <title>${n.kind} ${n.id}${n.service ? ` (service ${n.service})` : ''}</title>
          ${shape(n)}
          <text x=${n.x} y=${n.y - (n.kind === 'or' || n.kind === 'par' ? -4 : 3)} text-anchor="middle" class="node-label">${n.kind === 'or' || n.kind === 'par' ? n.kind : n.label}</text>
          ${n.kind === 'or' || n.kind === 'par' ? null : html`<text x=${n.x} y=${n.y + 15} text-anchor="middle" class="node-sub">${n.sub.length > 24 ? `${n.sub.slice(0, 23)}…` : n.sub}</text>`}
        </g>`,
      )}
    </svg>
    <figcaption>
      <span class="legend legend-instance">role instance</span> <span class="legend legend-or">or / par</span> <span class="legend legend-ref">ref (edge: bound now)</span>
      <span class="legend legend-import">import</span> <span class="legend legend-export">export</span> <span class="legend legend-crash">crash rule</span>
    </figcaption>
  </figure>`;
}
