/* SPDX-License-Identifier: MIT */
/*
 * Client assertions for the OAuth 2.0 client credentials grant with a
 * certificate (Microsoft identity platform): a short-lived JWT signed with
 * the application's private key, sent as client_assertion in place of a
 * client secret.
 *
 * Header: PS256 (RSA-PSS with SHA-256) with "x5t#S256", the base64url SHA-256
 * thumbprint of the certificate's DER form, which Microsoft's current
 * certificate-credentials page prescribes. Older versions of that page show
 * RS256 (PKCS #1 v1.5) with "x5t", the SHA-1 thumbprint, which is also offered.
 * Claims: aud = the token endpoint URL, iss = sub = the client id, a fresh
 * random jti, nbf = iat = now, exp = now + 10 minutes.
 *
 * struct crd_assertion_signer is immutable after creation: any thread may sign
 * with it at the same time.
 */
#ifndef CRD_ASSERTION_H
#define CRD_ASSERTION_H

#include <stdint.h>

#include "error.h"
#include "secret.h"
#include "util.h"

enum crd_assertion_algorithm {
    CRD_ASSERTION_PS256,
    CRD_ASSERTION_RS256,
    CRD_ASSERTION_ALGORITHM__COUNT
};

/* Lifetime of a signed assertion; Entra ID documents 5 to 10 minutes. */
#define CRD_ASSERTION_LIFETIME_S 600

struct crd_assertion_signer;

/*
 * Loads a PEM certificate and its PEM private key (RSA, as Entra ID expects
 * for these algorithms). Fails with -EINVAL when either does not parse, the
 * key is not RSA, or the key does not belong to the certificate. The message
 * names what is wrong, never key material.
 */
int crd_assertion_signer_new(const char *certificate_pem, const struct crd_secret *key_pem,
                             enum crd_assertion_algorithm algorithm,
                             struct crd_assertion_signer **ret_signer, struct crd_error *err);

void crd_assertion_signer_free(struct crd_assertion_signer *signer);

/*
 * Signs a new assertion for audience (the token endpoint URL) and client_id
 * at now_s (Unix seconds). *ret_jwt is a secret: the caller frees it with
 * crd_secret_free().
 */
int crd_assertion_sign(const struct crd_assertion_signer *signer, const char *audience,
                       const char *client_id, int64_t now_s, struct crd_secret **ret_jwt,
                       struct crd_error *err);

const char *crd_assertion_algorithm_name(enum crd_assertion_algorithm algorithm);

#endif
