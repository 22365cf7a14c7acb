/** htm bound to preact's h: tagged templates instead of JSX, so the browser runs the source as is. */
export { html } from 'htm/preact';
