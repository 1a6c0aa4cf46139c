// shoal: every role as a library (what `shoal up`, `shoal provider|host|store` and the
// tests start in-process) and the wire types and errors the roles share. A curated list:
// a part's other exports stay behind its own door. Services import shoal/service; farm
// scripts import shoal/compose.
export { startProvider, openRegistry, type Provider, type ProviderOptions, type ProviderTuning, type Registry } from './provider/index.ts';
export { startHost, type Host, type HostOptions } from './host/index.ts';
export { startStore, createRegistryClient, buildServiceImage, type RunningStore, type StartStoreOptions, type RegistryClient } from './image/index.ts';
export {
  ShoalError,
  isShoalError,
  errorCodes,
  type ErrorCode,
  type ErrorBody,
  type ServiceDescription,
  type ServiceDescriptionInput,
  type DeploymentPlan,
  type EndpointReference,
  type HostReport,
  type DriverCapabilities,
  type FarmGraph,
} from './protocol/index.ts';
