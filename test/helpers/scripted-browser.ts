import { EventEmitter } from 'node:events';
import type { ServiceBrowser, ServiceBrowserEvents, ServiceInstance } from '../../src/discovery/browser.js';

/** In process, no network (no multicast): a service browser the test drives by emitting 'up' and 'down'. */
export class ScriptedBrowser extends EventEmitter<ServiceBrowserEvents> implements ServiceBrowser {
  start(): void {}
  refresh(): void {}
  instances(): ServiceInstance[] {
    return [];
  }
  async stop(): Promise<void> {}
}
