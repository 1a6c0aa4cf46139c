// The image part's door: the store (server and its pieces), the client, building,
// import/export and safe unpacking. Other parts import from here or src/protocol only.
export { startStore, createStoreApp, layerVetter, type RunningStore, type StartStoreOptions } from './store-server.ts';
export { createBlobStore, type BlobStore, type BlobReader, type BlobIngester } from './blob-store.ts';
export { createImageStore, type ImageStore } from './image-store.ts';
export { createRegistryClient, pullImage, pushImage, mapLimit, type RegistryClient } from './registry-client.ts';
export { resolveRemoteImage, type RemoteImage } from './remote-resolve.ts';
export { createImageResolver, type ImageResolver, type ImageResolverOptions } from './image-resolver.ts';
export { importImage, type ImportResult } from './archive-import.ts';
export { exportImage, type ExportResult } from './archive-export.ts';
export { buildImage, buildTemplate, type BuildResult, type ProcessConfig } from './image-build.ts';
export { buildWasmComponentImage, COMPONENT_LABELS } from './component-build.ts';
export { buildLayer, indexLayers, type BuiltLayer, type LayerIndex } from './layer-build.ts';
export { unpackLayer, checkLayer, flattenLayers, type WhiteoutMode } from './layer-unpack.ts';
export { listImages, inspectImage, tagImage, type ImageListEntry, type ImageDetails } from './image-catalog.ts';
export { buildNodeTemplate, buildDebianTemplate, buildKernelTemplate, type TemplateResult } from './templates/build-templates.ts';
export { assembleKernel, readKernelFiles, currentKernelRelease, type KernelFiles } from './templates/kernel.ts';
export { assembleNodeRootfs } from './templates/node-rootfs.ts';
export { debootstrapRootfs, aptInstallInto } from './templates/debian-rootfs.ts';
export { requestGc } from './gc-client.ts';
export { bundleService, buildServiceImage, findImports, type BundleOptions, type BundleResult } from './sdk-bundle.ts';
export { mirrorForeignImage, mirrorRepository, mirrorRef, type MirroredImage, type MirrorLimits } from './foreign-image.ts';
export { authorizeRegistry, credentialsFor, listLogins, saveLogin, removeLogin, registryBaseUrl, type RegistryCredentials } from './registry-auth.ts';
export { buildComponentImage, componentDriverOf, isComponentDriver, COMPONENT_DRIVERS, DRIVER_LABEL, ENTRY_LABEL, type ComponentDriver } from './component-image.ts';
