import type { Metadata, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { AccountService } from '../../domain/accounts/account-service.js';
import type { AuthService } from '../../domain/auth/auth-service.js';
import type { CallerAuthenticator } from '../../domain/callers.js';
import type { UserRecord } from '../../persistence/repositories/users.js';
import type {
  ChangePasswordRequest,
  ChangePasswordResponse,
  DisableUserRequest,
  DisableUserResponse,
  EnableUserRequest,
  EnableUserResponse,
  GetJwksRequest,
  GetJwksResponse,
  GetUserRequest,
  GetUserResponse,
  LoginRequest,
  LoginResponse,
  LogoutRequest,
  LogoutResponse,
  RefreshTokenRequest,
  RefreshTokenResponse,
  RegisterRequest,
  RegisterResponse,
  RequestEmailVerificationRequest,
  RequestEmailVerificationResponse,
  RequestPasswordResetRequest,
  RequestPasswordResetResponse,
  ResetPasswordRequest,
  ResetPasswordResponse,
  SetUserRolesRequest,
  SetUserRolesResponse,
  TokenPair,
  User,
  ValidateTokenRequest,
  ValidateTokenResponse,
  VerifyEmailRequest,
  VerifyEmailResponse,
} from '../../generated/latchkey/auth/v1/auth_service.js';
import { ValidateTokenResponse as ValidateTokenResponseCodec } from '../../generated/latchkey/auth/v1/auth_service.js';
import type { IssuedTokens } from '../../domain/auth/auth-service.js';
import { EncodedResponse, unary, type CallContext, type CallDependencies } from '../call.js';
import type { RequestOrigin } from '../../domain/passwords/hasher.js';
import { DomainError } from '../../domain/errors.js';
import type { AccessTokenClaims } from '../../domain/tokens/access-tokens.js';
import { credentialsOf } from '../credentials.js';

const PREFIX = '/latchkey.auth.v1.AuthService/';

function validateResponseOf(claims: AccessTokenClaims): ValidateTokenResponse {
  return {
    claims: {
      userId: claims.userId,
      sessionId: claims.sessionId,
      email: claims.email,
      roles: [...claims.roles],
      issuedAt: new Date(claims.issuedAt * 1000),
      expiresAt: new Date(claims.expiresAt * 1000),
      tokenId: claims.tokenId,
    },
  };
}

/** Encoded ValidateToken answers by claims object; an entry goes when its token leaves the verified-token cache. */
const validateResponses = new WeakMap<AccessTokenClaims, EncodedResponse>();

export function toUserMessage(user: UserRecord): User {
  return {
    id: user.id,
    email: user.email,
    displayName: user.displayName,
    emailVerified: user.emailVerifiedAt !== null,
    disabled: user.disabledAt !== null,
    roles: [...new Set(user.roles)].sort(),
    createdAt: user.createdAt,
    updatedAt: user.updatedAt,
    lastLoginAt: user.lastLoginAt ?? undefined,
  };
}

function toTokenPair(tokens: IssuedTokens): TokenPair {
  return {
    accessToken: tokens.accessToken,
    accessTokenExpiresAt: tokens.accessTokenExpiresAt,
    refreshToken: tokens.refreshToken,
    refreshTokenExpiresAt: tokens.refreshTokenExpiresAt,
    tokenType: 'Bearer',
  };
}

/**
 * AuthService handlers: they translate protobuf messages to domain calls and back, nothing more.
 * Methods not returned here answer UNIMPLEMENTED naming the RPC (see implementService).
 */
export function createAuthHandlers(
  deps: CallDependencies,
  services: { auth: AuthService; accounts: AccountService; callers: CallerAuthenticator; revocationView?: { readonly fresh: boolean } },
): UntypedServiceImplementation {
  const { auth, accounts, callers } = services;
  const service = (metadata: Metadata) => callers.requireService(credentialsOf(metadata));
  /**
   * The source a call's password hashing is accounted to: the end user's address when a gateway
   * with a service API key reports it in `client.ip_address`, otherwise the connection's peer
   * (a client cannot pick its own source by filling in the field).
   */
  const originOf = (context: CallContext, clientAddress?: string): RequestOrigin => {
    let source = context.peerAddress;
    if (clientAddress) {
      try {
        if (callers.hasServiceKey(credentialsOf(context.metadata))) source = clientAddress;
      } catch {
        // A malformed credential header: the peer address stands.
      }
    }
    return { source, signal: context.signal };
  };
  return {
    register: unary<RegisterRequest, RegisterResponse>(deps, `${PREFIX}Register`, { usesDatabase: true }, async (request, context) => {
      const user = await auth.register({ email: request.email, password: request.password, displayName: request.displayName }, originOf(context));
      return { user: toUserMessage(user) };
    }),

    login: unary<LoginRequest, LoginResponse>(deps, `${PREFIX}Login`, { usesDatabase: true }, async (request, context) => {
      const result = await auth
        .login({ email: request.email, password: request.password, client: request.client }, originOf(context, request.client?.ipAddress))
        .catch((error: unknown) => {
          // latchkey_login_failures_total: sign-in failures by why, for dashboards and alerts.
          if (error instanceof DomainError && (error.reason === 'INVALID_CREDENTIALS' || error.reason === 'ACCOUNT_DISABLED')) deps.metrics.loginFailed?.(error.reason);
          throw error;
        });
      return { tokens: toTokenPair(result.tokens), sessionId: result.sessionId, user: toUserMessage(result.user) };
    }),

    refreshToken: unary<RefreshTokenRequest, RefreshTokenResponse>(deps, `${PREFIX}RefreshToken`, { usesDatabase: true }, async (request) => {
      const tokens = await auth.refresh({ refreshToken: request.refreshToken, client: request.client });
      return { tokens: toTokenPair(tokens) };
    }),

    logout: unary<LogoutRequest, LogoutResponse>(deps, `${PREFIX}Logout`, { usesDatabase: true }, async (request) => {
      await auth.logout({ refreshToken: request.refreshToken });
      return {};
    }),

    validateToken: unary<ValidateTokenRequest, EncodedResponse>(
      deps,
      `${PREFIX}ValidateToken`,
      // Plain validation never touches the database, so it keeps working through an outage; nor
      // does check_revocation while the revocation view is fresh (it answers from memory).
      { usesDatabase: (request) => request.checkRevocation && !services.revocationView?.fresh, successLogLevel: 'debug' },
      async (request) => {
        const claims = await auth.validate({ accessToken: request.accessToken, checkRevocation: request.checkRevocation });
        // A remembered token's claims are the same object on every call: its answer is encoded once.
        let encoded = validateResponses.get(claims);
        if (!encoded) {
          encoded = new EncodedResponse(Buffer.from(ValidateTokenResponseCodec.encode(validateResponseOf(claims)).finish()));
          validateResponses.set(claims, encoded);
        }
        return encoded;
      },
    ),

    getJwks: unary<GetJwksRequest, GetJwksResponse>(deps, `${PREFIX}GetJwks`, { usesDatabase: false, successLogLevel: 'debug' }, async () => {
      const jwks = auth.jwks();
      return { jwksJson: jwks.json, keyIds: [...jwks.keyIds] };
    }),

    changePassword: unary<ChangePasswordRequest, ChangePasswordResponse>(
      deps,
      `${PREFIX}ChangePassword`,
      { usesDatabase: true },
      async (request, context) => {
        const caller = await callers.requireUser(credentialsOf(context.metadata));
        const result = await accounts.changePassword(
          caller,
          { currentPassword: request.currentPassword, newPassword: request.newPassword, revokeOtherSessions: request.revokeOtherSessions },
          originOf(context),
        );
        return { revokedSessionCount: result.revokedSessionCount };
      },
    ),

    requestPasswordReset: unary<RequestPasswordResetRequest, RequestPasswordResetResponse>(
      deps,
      `${PREFIX}RequestPasswordReset`,
      { usesDatabase: true },
      async (request, context) => {
        const issued = await accounts.requestPasswordReset(await service(context.metadata), { email: request.email });
        return { resetToken: issued.token, resetLink: issued.link, expiresAt: issued.expiresAt };
      },
    ),

    resetPassword: unary<ResetPasswordRequest, ResetPasswordResponse>(deps, `${PREFIX}ResetPassword`, { usesDatabase: true }, async (request, context) => {
      await accounts.resetPassword({ token: request.token, newPassword: request.newPassword }, originOf(context));
      return {};
    }),

    requestEmailVerification: unary<RequestEmailVerificationRequest, RequestEmailVerificationResponse>(
      deps,
      `${PREFIX}RequestEmailVerification`,
      { usesDatabase: true },
      async (request, context) => {
        const issued = await accounts.requestEmailVerification(await service(context.metadata), { userId: request.userId });
        return { verificationToken: issued.token, verificationLink: issued.link, expiresAt: issued.expiresAt, email: issued.email };
      },
    ),

    verifyEmail: unary<VerifyEmailRequest, VerifyEmailResponse>(deps, `${PREFIX}VerifyEmail`, { usesDatabase: true }, async (request) => {
      const verified = await accounts.verifyEmail({ token: request.token });
      return { userId: verified.userId, email: verified.email };
    }),

    getUser: unary<GetUserRequest, GetUserResponse>(deps, `${PREFIX}GetUser`, { usesDatabase: true }, async (request, context) => {
      await service(context.metadata);
      return { user: toUserMessage(await accounts.getUser({ userId: request.userId })) };
    }),

    disableUser: unary<DisableUserRequest, DisableUserResponse>(deps, `${PREFIX}DisableUser`, { usesDatabase: true }, async (request, context) => {
      const result = await accounts.disableUser(await service(context.metadata), { userId: request.userId });
      return { user: toUserMessage(result.user), revokedSessionCount: result.revokedSessionCount };
    }),

    enableUser: unary<EnableUserRequest, EnableUserResponse>(deps, `${PREFIX}EnableUser`, { usesDatabase: true }, async (request, context) => {
      const user = await accounts.enableUser(await service(context.metadata), { userId: request.userId });
      return { user: toUserMessage(user) };
    }),

    setUserRoles: unary<SetUserRolesRequest, SetUserRolesResponse>(deps, `${PREFIX}SetUserRoles`, { usesDatabase: true }, async (request, context) => {
      const user = await accounts.setUserRoles(await service(context.metadata), { userId: request.userId, roles: request.roles });
      return { user: toUserMessage(user) };
    }),
  };
}
