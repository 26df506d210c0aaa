/**
 * Sparkplug B topic namespace (Sparkplug 3.0 §4.1):
 *
 *   spBv1.0/<group_id>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge_node_id>
 *   spBv1.0/<group_id>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge_node_id>/<device_id>
 *   spBv1.0/STATE/<host_id>                         (host application state, JSON)
 *
 * Group, edge node, device and host ids are single topic levels: UTF-8, no `/`, `+` or `#`.
 */

export const NAMESPACE = 'spBv1.0';

export type NodeMessage = 'NBIRTH' | 'NDEATH' | 'NDATA' | 'NCMD';
export type DeviceMessage = 'DBIRTH' | 'DDEATH' | 'DDATA' | 'DCMD';

/** Valid Sparkplug id: one topic level of at most 128 characters, no wildcard or separator. */
export const SPARKPLUG_ID = /^[^/+#\s]{1,128}$/u;

export function assertSparkplugId(what: string, id: string): string {
  if (!SPARKPLUG_ID.test(id)) throw new Error(`invalid Sparkplug ${what} ${JSON.stringify(id)}`);
  return id;
}

export function nodeTopic(group: string, type: NodeMessage, node: string): string {
  return `${NAMESPACE}/${group}/${type}/${node}`;
}

export function deviceTopic(group: string, type: DeviceMessage, node: string, device: string): string {
  return `${NAMESPACE}/${group}/${type}/${node}/${device}`;
}

export function stateTopic(hostId: string): string {
  return `${NAMESPACE}/STATE/${hostId}`;
}
