// Printing a farm graph (the types are shared wire data: src/protocol/farm-graph.ts).
import { edgesOf, type GraphNode, type FarmGraph } from '../protocol/index.ts';

export { edgesOf };
export type {
  FarmGraph,
  GraphNode,
  GraphEdge,
  InstanceNode,
  ImportNode,
  OrNode,
  ParNode,
  RefNode,
  IntermediaryNode,
  CrashAction,
  CrashRule,
  SnapshotDecl,
  ExportDecl,
} from '../protocol/index.ts';

const SHAPE: Record<GraphNode['kind'], string> = { instance: 'box', import: 'cds', or: 'diamond', par: 'trapezium', ref: 'circle' };

/** Graphviz DOT: instances are boxes, intermediaries diamonds/trapezia/circles, exports plain text. */
export function toDot(graph: FarmGraph): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [`digraph ${q(graph.name)} {`, '  rankdir=LR;'];
  for (const n of graph.nodes) {
    const label = `${n.id}\n${n.kind}: ${n.service}${n.kind === 'import' ? `\n${n.url}` : ''}`;
    lines.push(`  ${q(n.id)} [shape=${SHAPE[n.kind]}, label=${q(label)}];`);
  }
  for (const e of graph.exports) lines.push(`  ${q(`export:${e.path}`)} [shape=plaintext, label=${q(`/${e.path}`)}];`);
  for (const r of graph.crashRules) {
    for (const a of r.actions) {
      if (a.kind === 'update') lines.push(`  ${q(r.instance)} -> ${q(a.ref)} [style=dashed, color=red, label=${q(`on crash: ${a.ref} := ${a.target}`)}];`);
    }
  }
  for (const e of edgesOf(graph)) lines.push(`  ${q(e.from)} -> ${q(e.to)} [label=${q(e.label)}];`);
  lines.push('}');
  return lines.join('\n') + '\n';
}
