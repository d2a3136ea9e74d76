import { readFileSync } from 'node:fs';
import { formatModuleSource } from '../../format.js';

/**
 * The status page at `/`: a static HTML document and its ES module script
 * (this folder; the build copies them next to the compiled code), plus
 * `format.js`, the CLI's own formatters served as a module. No external
 * requests, nothing built at run time.
 */
export interface StatusPageAssets {
  html: string;
  script: string;
  format: string;
}

export function loadStatusPage(): StatusPageAssets {
  const read = (name: string) => readFileSync(new URL(name, import.meta.url), 'utf8');
  return { html: read('./index.html'), script: read('./status.js'), format: formatModuleSource() };
}
