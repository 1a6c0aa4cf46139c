// shoal/compose: what a farm script imports. Typed roles and combinators build a graph
// (data); `shoal apply` type-checks the script and sends the graph to a provider, whose
// data plane runs the intermediaries (src/provider/intermediaries/).
export {
  farm,
  role,
  importEndpoint,
  exportEndpoint,
  or,
  par,
  ref,
  update,
  restart,
  snapshot,
  restore,
  onCrash,
  EXTERNAL,
  type Endpoint,
  type Exports,
  type AnyExports,
  type Instance,
  type RefHandle,
  type Snapshot,
  type Action,
  type Role,
  type RoleImports,
  type RoleOptions,
  type ExportPath,
} from './farm.ts';
export { edgesOf, toDot, type FarmGraph, type GraphNode, type GraphEdge, type InstanceNode, type ImportNode, type OrNode, type ParNode, type RefNode, type IntermediaryNode, type CrashAction, type CrashRule, type SnapshotDecl, type ExportDecl } from './graph.ts';
export { defineService, Type, type Static } from '../service/index.ts';
export { typeCheckFarm, FARM_COMPILER_OPTIONS, type TypeCheckResult } from './typecheck.ts';
export { loadFarm, applyFarm, type ApplyOptions, type ApplyOutcome } from './apply.ts';
