export * from './errors.ts';
export * from './digest.ts';
export * from './oci.ts';
export * from './image-ref.ts';
export * from './driver.ts';
export * from './deployment.ts';
export * from './data-plane.ts';
export * from './auth.ts';
