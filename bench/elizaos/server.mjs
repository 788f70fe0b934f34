// The upstream ElizaOS server for the HTTP benchmark: one agent, embedded PGlite, no model plugin
// (the Sessions API needs none), listening on 127.0.0.1:PORT (SERVER_HOST is set by the caller).
// Prints one JSON line {ready, agentId, pid} once it serves.
import { AgentServer } from '@elizaos/server';

const [port, dataDir] = [Number(process.argv[2]), process.argv[3]];
const server = new AgentServer();
const character = { name: 'nubi-peer', bio: ['benchmark peer'], plugins: [] };
await server.start({ port, dataDir, agents: [{ character }] });
const agent = server.getAllAgents()[0];
console.log(JSON.stringify({ ready: true, agentId: agent.agentId, pid: process.pid }));
