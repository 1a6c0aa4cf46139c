// shoal/service: what a service's code imports inside an instance (and the typed client
// for calling a service from outside one). Depends on node: built-ins and TypeBox only,
// so it runs in the bare node template once bundled (src/image/sdk-bundle.ts).
export {
  defineService,
  toServiceDescription,
  isServiceDefinition,
  type ServiceDefinition,
  type ServiceSpec,
  type OperationSpec,
  type OperationMap,
  type ImportMap,
  type AnyService,
  type OperationName,
  type InputOf,
  type OutputOf,
} from './define.ts';
export { serve, type Handler, type Handlers, type HandlerContext, type ServeOptions, type RunningService } from './serve.ts';
export {
  connect,
  createClient,
  createImportClients,
  socketTransport,
  type Client,
  type ImportClients,
  type CallOptions,
  type ConnectOptions,
  type Transport,
} from './client.ts';
export { ServiceError, statusForCode, type ServiceErrorOptions, type WireError } from './errors.ts';
export { createLogger, silentLogger, type Logger, type LogFields, type LogLevel } from './log.ts';
// Re-exported so a service file needs one import: `import { Type, defineService, serve } from 'shoal/service'`.
export { Type, type Static, type TSchema } from '@sinclair/typebox';
