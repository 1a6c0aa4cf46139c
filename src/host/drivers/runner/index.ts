// The shared runner launcher of the lightweight drivers (isolate; wasm can use it too):
// start a confined Node process that hosts many instances, and talk to it.
export { deleteRunc, launchRunner, nodeBinary, NODE_DIR_INSIDE, type Confinement, type RunnerBind, type RunnerLaunchOptions, type RunnerProcess } from './launch.ts';
export { createRunnerChannel, type RunnerChannel, type RunnerReply } from './channel.ts';
