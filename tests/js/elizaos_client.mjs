// Drives nubi's Sessions API with the real @elizaos/api-client and prints one JSON line of results.
//
// Usage: node elizaos_client.mjs <base-url> [agent-id]   (or NUBI_URL / NUBI_AGENT_ID; NUBI_API_KEY optional)
// Every step is recorded, errors included, so the Python test can assert on each one.
import { randomUUID } from 'node:crypto';
import { ElizaClient } from '@elizaos/api-client';

const baseUrl = process.argv[2] ?? process.env.NUBI_URL;
const agentId = process.argv[3] ?? process.env.NUBI_AGENT_ID;
const apiKey = process.env.NUBI_API_KEY || undefined;
if (!baseUrl) {
  console.error('usage: node elizaos_client.mjs <base-url> [agent-id]');
  process.exit(2);
}

const client = ElizaClient.create({ baseUrl, apiKey, timeout: 10000 });
const sessions = client.sessions;
const headers = { 'Content-Type': 'application/json', ...(apiKey ? { 'X-API-KEY': apiKey } : {}) };
const results = {};

// Run one step; record its value, or the ApiError the client raised (code, status, message).
async function step(name, fn) {
  try {
    results[name] = { ok: true, value: await fn() };
  } catch (err) {
    results[name] = { ok: false, error: { name: err.name, code: err.code, status: err.status, message: err.message } };
  }
  return results[name];
}

// A plain HTTP call, for what the client does not wrap (renew) or cannot read (an SSE stream).
async function raw(method, path, body) {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const contentType = res.headers.get('content-type') ?? '';
  return { status: res.status, contentType, body: contentType.includes('json') ? JSON.parse(text) : text };
}

function parseSse(text) {
  return text
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => {
      const event = block.match(/^event: (.*)$/m)?.[1];
      const data = block.match(/^data: (.*)$/m)?.[1];
      return { event, data: data ? JSON.parse(data) : null };
    });
}

const base = '/api/messaging/sessions';
const userId = randomUUID();

await step('health', () => sessions.checkHealth());
await step('listAgents', () => client.agents.listAgents());
const agent = agentId ?? results.listAgents.value?.agents?.[0]?.id;

const created = await step('create', () =>
  sessions.createSession({ agentId: agent, userId, metadata: { platform: 'web', username: 'js-client' } }),
);
const sid = created.value?.sessionId;

await step('get', () => sessions.getSession(sid));
await step('sendWebsocket', () => sessions.sendMessage(sid, { content: 'hello from the client' }));
await step('sendHttp', () => sessions.sendMessageSync(sid, { content: '/help' }));
await step('sendHttpPlain', () => sessions.sendMessage(sid, { content: 'just chatting', transport: 'http' }));
// The client POSTs an SSE request but reads the answer as JSON: record what it returns...
await step('sendSseViaClient', () => sessions.sendMessage(sid, { content: 'streamed via client', transport: 'sse' }));
// ...and read the stream itself with fetch.
await step('sendSseStream', async () => {
  const res = await raw('POST', `${base}/${sid}/messages`, { content: '/help', transport: 'sse' });
  return { status: res.status, contentType: res.contentType, events: parseSse(res.body) };
});

const page1 = await step('messagesPage1', () => sessions.getMessages(sid, { limit: 3 }));
const cursors = page1.value?.cursors ?? {};
await step('messagesPage2', () => sessions.getMessages(sid, { limit: 3, before: cursors.before }));
await step('messagesAfter', () => sessions.getMessages(sid, { after: cursors.before }));
await step('messagesAll', () => sessions.getMessages(sid, { limit: 100 }));

await step('renew', () => raw('POST', `${base}/${sid}/renew`));
await step('heartbeat', () => sessions.post(`${base}/${sid}/heartbeat`));
await step('timeout', () => sessions.patch(`${base}/${sid}/timeout`, { timeoutMinutes: 90, autoRenew: true }));
await step('timeoutOutOfRange', () => sessions.patch(`${base}/${sid}/timeout`, { timeoutMinutes: 2 }));

await step('getUnknown', () => sessions.getSession(randomUUID()));
await step('createUnknownAgent', () => sessions.createSession({ agentId: randomUUID(), userId }));
await step('createBadUuid', () => sessions.createSession({ agentId: 'not-a-uuid', userId }));
await step('sendTooLong', () => sessions.sendMessage(sid, { content: 'x'.repeat(4001) }));
await step('messagesBadLimit', () => sessions.getMessages(sid, { limit: 500 }));

await step('listBeforeDelete', () => sessions.listSessions());
await step('delete', () => sessions.deleteSession(sid));
await step('getDeleted', () => sessions.getSession(sid));
await step('listAfterDelete', () => sessions.listSessions());

console.log(JSON.stringify({ baseUrl, agentId: agent, sessionId: sid, results }));
