// One mutation at a time in an image store (a manifest's final write, delete, tag, gc):
// a promise chain. A failed step does not stop the ones after it; its caller gets the error.
export type Lock = <T>(fn: () => Promise<T>) => Promise<T>;

export function createLock(): Lock {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    // The chain only orders the steps; each step's error reaches its own caller through `run`.
    tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
}
