// The fixed local token the end-to-end servers are started with (start-server.mjs).
export const TOKEN = 'e2e-local-token-0123456789';
