/** The plugin's modes: which CSI services one process serves (kept apart so the CLI can name them without loading gRPC). */
export const PLUGIN_MODES = ['controller', 'node', 'all'] as const;
export type PluginMode = (typeof PLUGIN_MODES)[number];
