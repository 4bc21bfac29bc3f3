/** `node --import ./import-trace.js …`: records every module the process resolves (import-trace-hooks.ts). */
import { register } from 'node:module';

register('./import-trace-hooks.js', import.meta.url);
