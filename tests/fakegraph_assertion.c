/* SPDX-License-Identifier: MIT */
/*
 * Verification of client assertions (certificate credentials) at fakegraph's
 * token endpoint, as Entra ID checks them. The JWT must be signed PS256 with
 * "x5t#S256", or RS256 with "x5t", naming the registered certificate. Its aud
 * must be the token endpoint of the tenant it is sent to, iss and sub the
 * client id, nbf and exp current, and its jti never seen before.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "assertion.h"
#include "fakegraph_server.h"

/* Clock skew accepted on nbf and exp, as identity providers commonly allow. */
#define SKEW_S 300
/* How many jti values are remembered to reject a replayed assertion. */
#define SEEN_JTI_MAX 4096

struct fakegraph_client_certificate {
    EVP_PKEY *public_key;
    char x5t[64];          /* base64url SHA-1 thumbprint */
    char x5t_s256[64];     /* base64url SHA-256 thumbprint */
    pthread_mutex_t lock;  /* protects seen and n_seen */
    char (*seen)[64];
    size_t n_seen;
};

int fakegraph_client_certificate_load(const char *path,
                                      struct fakegraph_client_certificate **ret_certificate,
                                      struct crd_error *err)
{
    FILE *file = fopen(path, "re");
    if (file == NULL) {
        return crd_error_set(err, -errno, "cannot open --client-certificate '%s': %s", path,
                             strerror(errno));
    }
    X509 *x509 = PEM_read_X509(file, NULL, NULL, NULL);
    fclose(file);
    if (x509 == NULL) {
        return crd_error_set(err, -EINVAL, "--client-certificate '%s' is not a PEM certificate",
                             path);
    }

    struct fakegraph_client_certificate *certificate = calloc(1, sizeof(*certificate));
    certificate->seen = calloc(SEEN_JTI_MAX, sizeof(*certificate->seen));
    if (certificate->seen == NULL) {
        X509_free(x509);
        free(certificate);
        return crd_error_set(err, -ENOMEM, "out of memory");
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    X509_digest(x509, EVP_sha1(), digest, &len);
    crd_base64url_encode(digest, len, certificate->x5t);
    X509_digest(x509, EVP_sha256(), digest, &len);
    crd_base64url_encode(digest, len, certificate->x5t_s256);
    certificate->public_key = X509_get_pubkey(x509);
    X509_free(x509);
    pthread_mutex_init(&certificate->lock, NULL);
    *ret_certificate = certificate;
    return 0;
}

void fakegraph_client_certificate_free(struct fakegraph_client_certificate *certificate)
{
    if (certificate == NULL) {
        return;
    }
    EVP_PKEY_free(certificate->public_key);
    pthread_mutex_destroy(&certificate->lock);
    free(certificate->seen);
    free(certificate);
}

static unsigned char *base64url_decode(const char *in, size_t len, size_t *ret_len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char *out = malloc(len + 1);
    size_t o = 0;
    unsigned bits = 0;
    int n_bits = 0;
    for (size_t i = 0; out != NULL && i < len; i++) {
        const char *at = in[i] != '\0' ? strchr(alphabet, in[i]) : NULL;
        if (at == NULL) {
            free(out);
            return NULL;
        }
        bits = (bits << 6) | (unsigned)(at - alphabet);
        n_bits += 6;
        if (n_bits >= 8) {
            n_bits -= 8;
            out[o++] = (unsigned char)(bits >> n_bits);
        }
    }
    if (out != NULL) {
        out[o] = '\0';
        *ret_len = o;
    }
    return out;
}

static json_t *decode_json_part(const char *part, size_t len)
{
    size_t decoded_len = 0;
    unsigned char *decoded = base64url_decode(part, len, &decoded_len);
    json_t *json = decoded != NULL ? json_loadb((const char *)decoded, decoded_len, 0, NULL) : NULL;
    free(decoded);
    return json_is_object(json) ? json : (json_decref(json), NULL);
}

static bool signature_valid(const struct fakegraph_client_certificate *certificate, bool pss,
                            const char *signed_part, size_t signed_len, const char *signature_b64)
{
    size_t signature_len = 0;
    unsigned char *signature = base64url_decode(signature_b64, strlen(signature_b64),
                                                &signature_len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pkey_ctx = NULL;
    bool valid = signature != NULL && ctx != NULL &&
                 EVP_DigestVerifyInit(ctx, &pkey_ctx, EVP_sha256(), NULL,
                                      certificate->public_key) == 1;
    if (valid && pss) {
        valid = EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    }
    valid = valid && EVP_DigestVerify(ctx, signature, signature_len,
                                      (const unsigned char *)signed_part, signed_len) == 1;
    EVP_MD_CTX_free(ctx);
    free(signature);
    return valid;
}

/* Remembers jti; false when it was seen before. */
static bool remember_jti(struct fakegraph_client_certificate *certificate, const char *jti)
{
    bool fresh = true;
    pthread_mutex_lock(&certificate->lock);
    size_t n = certificate->n_seen < SEEN_JTI_MAX ? certificate->n_seen : SEEN_JTI_MAX;
    for (size_t i = 0; i < n && fresh; i++) {
        fresh = strcmp(certificate->seen[i], jti) != 0;
    }
    if (fresh) {
        snprintf(certificate->seen[certificate->n_seen % SEEN_JTI_MAX], 64, "%s", jti);
        certificate->n_seen++;
    }
    pthread_mutex_unlock(&certificate->lock);
    return fresh;
}

/* Checks the claims; returns NULL or the reason they are not acceptable. */
static const char *check_claims(const struct fakegraph_server *server, const char *tenant,
                                const json_t *claims, int64_t now_s)
{
    char audience[256];
    snprintf(audience, sizeof(audience), "%s/%s/oauth2/v2.0/token", server->base_url, tenant);
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    json_t *nbf = json_object_get(claims, "nbf");
    json_t *exp = json_object_get(claims, "exp");
    if (aud == NULL || strcmp(aud, audience) != 0) {
        return "the audience claim is not this token endpoint";
    }
    if (iss == NULL || sub == NULL || strcasecmp(iss, server->client_id) != 0 ||
        strcasecmp(sub, server->client_id) != 0) {
        return "iss and sub must be the client id";
    }
    if (!json_is_integer(nbf) || !json_is_integer(exp)) {
        return "nbf and exp are required";
    }
    if (json_integer_value(nbf) > now_s + SKEW_S) {
        return "the assertion is not valid yet (nbf)";
    }
    if (json_integer_value(exp) < now_s - SKEW_S) {
        return "the assertion has expired (exp)";
    }
    if (!json_is_string(json_object_get(claims, "jti"))) {
        return "the jti claim is missing";
    }
    return NULL;
}

const char *fakegraph_verify_assertion(const struct fakegraph_server *server, const char *tenant,
                                       const char *type, const char *jwt, int64_t now_s)
{
    struct fakegraph_client_certificate *certificate = server->client_certificate;
    if (certificate == NULL) {
        return "no client certificate is registered (fakegraph serve --client-certificate)";
    }
    if (type == NULL ||
        strcmp(type, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") != 0) {
        return "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:"
               "jwt-bearer";
    }
    const char *dot1 = strchr(jwt, '.');
    const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    if (dot2 == NULL) {
        return "the assertion is not a JWT";
    }
    json_t *header = decode_json_part(jwt, (size_t)(dot1 - jwt));
    json_t *claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    const char *reason = NULL;
    if (header == NULL || claims == NULL) {
        reason = "the assertion's header or claims are not base64url JSON";
        goto out;
    }

    const char *alg = json_string_value(json_object_get(header, "alg"));
    bool pss = alg != NULL && strcmp(alg, "PS256") == 0;
    bool pkcs1 = alg != NULL && strcmp(alg, "RS256") == 0;
    const char *thumbprint = json_string_value(json_object_get(header, pss ? "x5t#S256" : "x5t"));
    if (!pss && !pkcs1) {
        reason = "alg must be PS256 or RS256";
    } else if (thumbprint == NULL ||
               strcmp(thumbprint, pss ? certificate->x5t_s256 : certificate->x5t) != 0) {
        reason = "the certificate thumbprint does not name the registered certificate";
    } else if (!signature_valid(certificate, pss, jwt, (size_t)(dot2 - jwt), dot2 + 1)) {
        reason = "the signature does not verify with the registered certificate";
    } else {
        reason = check_claims(server, tenant, claims, now_s);
    }
    if (reason == NULL &&
        !remember_jti(certificate, json_string_value(json_object_get(claims, "jti")))) {
        reason = "the assertion was already used (jti replayed)";
    }
out:
    json_decref(header);
    json_decref(claims);
    return reason;
}
