/** Reported in state (`agent`) and status; bump with releases. */
export const AGENT_VERSION = 'outpost-agent/0.1.0';
