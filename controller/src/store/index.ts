/** The controller store: one SQLite database, one repository per concern, one transaction helper. */
import { AuditLog } from '../audit.js';
import { CommandsRepo } from './commands.js';
import type { Db } from './db.js';
import { DeploymentsRepo } from './deployments.js';
import { MaintenanceRepo } from './maintenance.js';
import { SitesRepo } from './sites.js';
import { StacksRepo } from './stacks.js';
import { UsersRepo } from './users.js';

export class Store {
  readonly sites: SitesRepo;
  readonly stacks: StacksRepo;
  readonly commands: CommandsRepo;
  readonly users: UsersRepo;
  readonly deployments: DeploymentsRepo;
  readonly maintenance: MaintenanceRepo;
  readonly audit: AuditLog;

  constructor(
    readonly db: Db,
    readonly now: () => number = Date.now,
  ) {
    this.sites = new SitesRepo(db);
    this.stacks = new StacksRepo(db);
    this.commands = new CommandsRepo(db);
    this.users = new UsersRepo(db);
    this.deployments = new DeploymentsRepo(db);
    this.maintenance = new MaintenanceRepo(db);
    this.audit = new AuditLog(db, now);
  }

  /** Runs `fn` in one transaction (immediate: the write lock is taken up front). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }
}
