// The farm graph: what a farm script (src/compose) produces and what the provider
// (src/provider/intermediaries) realises. It is plain JSON data (no functions), so
// `shoal graph` can print it and the provider can store it and diff a new version
// against the one it runs. Both parts share it, so it lives in protocol.
import type { ServiceDescriptionInput } from './service.ts';

/** A role instance: one instance of a service whose imports are bound to other nodes. */
export interface InstanceNode {
  kind: 'instance';
  id: string;
  service: string;
  /** import name → the node it is bound to. */
  imports: Record<string, string>;
}

/** A service outside the farm, reached at `url` (append `/<operation>`). */
export interface ImportNode {
  kind: 'import';
  id: string;
  service: string;
  url: string;
}

/** Load balancing over targets (least outstanding). */
export interface OrNode {
  kind: 'or';
  id: string;
  service: string;
  targets: string[];
}

/** Fan out to every target; the first 2xx reply wins, the rest are cancelled. */
export interface ParNode {
  kind: 'par';
  id: string;
  service: string;
  targets: string[];
}

/** An indirection whose target can be swapped atomically (`update`). */
export interface RefNode {
  kind: 'ref';
  id: string;
  service: string;
  target: string;
}

export type GraphNode = InstanceNode | ImportNode | OrNode | ParNode | RefNode;
export type IntermediaryNode = OrNode | ParNode | RefNode;

/** What the provider does when an instance crashes (declarative: no script runs then). */
export type CrashAction =
  | { kind: 'update'; ref: string; target: string }
  | { kind: 'restart' }
  | { kind: 'restore'; snapshot: string };

export interface CrashRule {
  instance: string;
  actions: CrashAction[];
}

/**
 * A declared snapshot of an instance: its running state is captured when the farm is
 * applied (and every `everyMs` after, when given) and kept as a saved state labelled
 * `<farm>.<id>`; `restore` in a crash rule starts the instance again from the newest one,
 * memory included. Only instances whose driver can snapshot (wasm, vm) may be named: the
 * compose types refuse the others, the provider refuses them at apply.
 */
export interface SnapshotDecl {
  id: string;
  instance: string;
  everyMs?: number;
}

/** Drivers whose capabilities include snapshot and restore (checked against the drivers by test/architecture). */
export const SNAPSHOT_DRIVERS = ['wasm', 'vm'] as const;
export type SnapshotDriver = (typeof SNAPSHOT_DRIVERS)[number];

/** The saved-state label of a farm's declared snapshot. */
export function farmSnapshotLabel(farm: string, snapshot: string): string {
  return `${farm}.${snapshot}`;
}

export interface ExportDecl {
  /** The name it is published under: `/x/<farm>/<path>/<operation>`. */
  path: string;
  node: string;
  service: string;
}

export interface FarmGraph {
  format: 'shoal.farm/v1';
  name: string;
  /** Service name → its description (operations with JSON Schemas, image). */
  services: Record<string, ServiceDescriptionInput>;
  nodes: GraphNode[];
  exports: ExportDecl[];
  crashRules: CrashRule[];
  snapshots: SnapshotDecl[];
}

export interface GraphEdge {
  from: string;
  to: string;
  /** The import name for instance → node edges; the intermediary kind otherwise. */
  label: string;
}

/** Every possible call: instance → what its imports are bound to, intermediary → targets, export → node. */
export function edgesOf(graph: FarmGraph): GraphEdge[] {
  const edges: GraphEdge[] = [];
  for (const n of graph.nodes) {
    if (n.kind === 'instance') for (const [name, to] of Object.entries(n.imports)) edges.push({ from: n.id, to, label: name });
    else if (n.kind === 'or' || n.kind === 'par') for (const to of n.targets) edges.push({ from: n.id, to, label: n.kind });
    else if (n.kind === 'ref') edges.push({ from: n.id, to: n.target, label: 'ref' });
  }
  for (const e of graph.exports) edges.push({ from: `export:${e.path}`, to: e.node, label: 'export' });
  return edges;
}
