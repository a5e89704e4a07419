import { createHash, randomBytes } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import type { DbOrTx } from '../client';
import { uuidv7 } from '../ids';
import { apiTokens, teams } from '../schema/index';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** A team token: 32 random bytes; only its hash is stored. */
export function newToken(): string {
  return `tk_${randomBytes(32).toString('base64url')}`;
}

export async function createTeam(db: DbOrTx, name: string) {
  const id = uuidv7();
  const token = newToken();
  const tokenId = uuidv7();
  await db.insert(teams).values({ id, name });
  await db.insert(apiTokens).values({ id: tokenId, teamId: id, tokenHash: hashToken(token) });
  return { id, name, token, tokenId };
}

export async function createToken(db: DbOrTx, teamId: string): Promise<{ id: string; token: string } | undefined> {
  const [team] = await db.select({ id: teams.id }).from(teams).where(eq(teams.id, teamId));
  if (!team) return undefined;
  const token = newToken();
  const id = uuidv7();
  await db.insert(apiTokens).values({ id, teamId, tokenHash: hashToken(token) });
  return { id, token };
}

export async function revokeToken(db: DbOrTx, tokenId: string): Promise<boolean> {
  const rows = await db
    .update(apiTokens)
    .set({ revokedAt: new Date() })
    .where(and(eq(apiTokens.id, tokenId), isNull(apiTokens.revokedAt)))
    .returning({ id: apiTokens.id });
  return rows.length > 0;
}

/** The team a plain token belongs to, if the token exists and is not revoked. */
export async function teamForToken(db: DbOrTx, token: string): Promise<{ teamId: string; tokenId: string } | undefined> {
  const [row] = await db
    .select({ teamId: apiTokens.teamId, tokenId: apiTokens.id })
    .from(apiTokens)
    .where(and(eq(apiTokens.tokenHash, hashToken(token)), isNull(apiTokens.revokedAt)));
  return row;
}

export async function getTeam(db: DbOrTx, id: string) {
  const [row] = await db.select().from(teams).where(eq(teams.id, id));
  return row;
}
