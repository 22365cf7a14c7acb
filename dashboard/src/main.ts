import { render } from 'preact';
import { App } from './views/app.js';
import { html } from './views/html.js';

/** The topic prefix the coordinator uses (its OTA_TOPIC_PREFIX), written into the page it serves. */
const prefix = document.querySelector('meta[name="ota-topic-prefix"]')?.getAttribute('content') || 'ota/v1';
const root = document.getElementById('app');
if (root) render(html`<${App} prefix=${prefix} />`, root);
