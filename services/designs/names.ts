/**
 * The names of the vIOMMU designs vmmsim runs: the one place a design is named. Everything else
 * reaches a design through its descriptor (registry.ts), so the compiler knows every part of every
 * design, and no role or controller module compares a model name as a string.
 */
/** In the order `compare --models all` runs them and tables list them. */
export const MODELS = [
  'none', 'host', 'intel-cm', 'emulated-smmuv3', 'spapr-tce', 'spapr-tce-kvm', 'virtio-iommu', 'vhost-iommu',
  'nested-smmuv3', 'nested-smmuv3-vcmdq', 'nested-smmuv3-kvm',
] as const;
export type ModelName = (typeof MODELS)[number];

/** Each design by a name code can use where it means one design on purpose (a baseline, a bench). */
export const MODEL = {
  none: 'none',
  host: 'host',
  intelCm: 'intel-cm',
  emulatedSmmuv3: 'emulated-smmuv3',
  virtioIommu: 'virtio-iommu',
  vhostIommu: 'vhost-iommu',
  spaprTce: 'spapr-tce',
  spaprTceKvm: 'spapr-tce-kvm',
  nestedSmmuv3: 'nested-smmuv3',
  nestedSmmuv3Vcmdq: 'nested-smmuv3-vcmdq',
  nestedSmmuv3Kvm: 'nested-smmuv3-kvm',
} as const satisfies Record<string, ModelName>;

export function isModelName(s: string): s is ModelName {
  return (MODELS as readonly string[]).includes(s);
}
