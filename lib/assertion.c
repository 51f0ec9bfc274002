/* SPDX-License-Identifier: MIT */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "assertion.h"

struct crd_assertion_signer {
    enum crd_assertion_algorithm algorithm;
    EVP_PKEY *key;
    char thumbprint[64];   /* base64url of the SHA-256 or SHA-1 DER thumbprint */
};

static const char *const algorithm_names[CRD_ASSERTION_ALGORITHM__COUNT] = {
    [CRD_ASSERTION_PS256] = "PS256",
    [CRD_ASSERTION_RS256] = "RS256",
};

const char *crd_assertion_algorithm_name(enum crd_assertion_algorithm algorithm)
{
    if ((unsigned)algorithm >= CRD_ASSERTION_ALGORITHM__COUNT) {
        return "unknown";
    }
    return algorithm_names[algorithm];
}

int crd_assertion_signer_new(const char *certificate_pem, const struct crd_secret *key_pem,
                             enum crd_assertion_algorithm algorithm,
                             struct crd_assertion_signer **ret_signer, struct crd_error *err)
{
    int r = 0;
    X509 *certificate = NULL;
    EVP_PKEY *key = NULL;
    struct crd_assertion_signer *signer = NULL;

    BIO *bio = BIO_new_mem_buf(certificate_pem, -1);
    certificate = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (certificate == NULL) {
        r = crd_error_set(err, -EINVAL, "the client certificate is not a PEM X.509 certificate");
        goto out;
    }

    bio = BIO_new_mem_buf(crd_secret_bytes(key_pem), (int)crd_secret_len(key_pem));
    key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
    BIO_free(bio);
    if (key == NULL) {
        r = crd_error_set(err, -EINVAL, "the client key is not an unencrypted PEM private key");
        goto out;
    }
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        r = crd_error_set(err, -EINVAL, "the client key is not an RSA key; %s needs RSA",
                          crd_assertion_algorithm_name(algorithm));
        goto out;
    }
    if (X509_check_private_key(certificate, key) != 1) {
        r = crd_error_set(err, -EINVAL, "the client key does not belong to the client "
                          "certificate; use the key the certificate was issued for");
        goto out;
    }

    signer = calloc(1, sizeof(*signer));
    if (signer == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    const EVP_MD *md = algorithm == CRD_ASSERTION_PS256 ? EVP_sha256() : EVP_sha1();
    if (X509_digest(certificate, md, digest, &digest_len) != 1) {
        r = crd_error_set(err, -EINVAL, "cannot compute the certificate thumbprint");
        goto out;
    }
    crd_base64url_encode(digest, digest_len, signer->thumbprint);
    signer->algorithm = algorithm;
    signer->key = key;
    key = NULL;

    *ret_signer = signer;
    signer = NULL;
out:
    crd_assertion_signer_free(signer);
    EVP_PKEY_free(key);
    X509_free(certificate);
    return r;
}

void crd_assertion_signer_free(struct crd_assertion_signer *signer)
{
    if (signer == NULL) {
        return;
    }
    EVP_PKEY_free(signer->key);
    free(signer);
}

/* base64url of a compact JSON object; the caller frees it. */
static char *encode_json(json_t *object)
{
    char *text = json_dumps(object, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL) {
        return NULL;
    }
    size_t len = strlen(text);
    char *encoded = malloc(4 * ((len + 2) / 3) + 1);
    if (encoded != NULL) {
        crd_base64url_encode((const unsigned char *)text, len, encoded);
    }
    free(text);
    return encoded;
}

/* Signs data with the signer's key; *ret_signature is malloc'ed. */
static int sign_bytes(const struct crd_assertion_signer *signer, const char *data, size_t len,
                      unsigned char **ret_signature, size_t *ret_len)
{
    int r = -EIO;
    unsigned char *signature = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pkey_ctx = NULL;
    if (ctx == NULL ||
        EVP_DigestSignInit(ctx, &pkey_ctx, EVP_sha256(), NULL, signer->key) != 1) {
        goto out;
    }
    if (signer->algorithm == CRD_ASSERTION_PS256 &&
        (EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST) != 1)) {
        goto out;
    }
    size_t signature_len = 0;
    if (EVP_DigestSign(ctx, NULL, &signature_len, (const unsigned char *)data, len) != 1) {
        goto out;
    }
    signature = malloc(signature_len);
    if (signature == NULL ||
        EVP_DigestSign(ctx, signature, &signature_len, (const unsigned char *)data, len) != 1) {
        goto out;
    }
    *ret_signature = signature;
    *ret_len = signature_len;
    signature = NULL;
    r = 0;
out:
    free(signature);
    EVP_MD_CTX_free(ctx);
    return r;
}

int crd_assertion_sign(const struct crd_assertion_signer *signer, const char *audience,
                       const char *client_id, int64_t now_s, struct crd_secret **ret_jwt,
                       struct crd_error *err)
{
    int r = 0;
    char *header = NULL;
    char *claims = NULL;
    char *jwt = NULL;
    unsigned char *signature = NULL;
    size_t signature_len = 0;

    unsigned char jti_bytes[16];
    char jti[40];
    if (RAND_bytes(jti_bytes, sizeof(jti_bytes)) != 1) {
        return crd_error_set(err, -EIO, "the OpenSSL random generator failed");
    }
    jti_bytes[6] = (unsigned char)((jti_bytes[6] & 0x0f) | 0x40);  /* a version 4 GUID */
    jti_bytes[8] = (unsigned char)((jti_bytes[8] & 0x3f) | 0x80);
    snprintf(jti, sizeof(jti),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             jti_bytes[0], jti_bytes[1], jti_bytes[2], jti_bytes[3], jti_bytes[4], jti_bytes[5],
             jti_bytes[6], jti_bytes[7], jti_bytes[8], jti_bytes[9], jti_bytes[10],
             jti_bytes[11], jti_bytes[12], jti_bytes[13], jti_bytes[14], jti_bytes[15]);

    json_t *header_json = json_pack("{s:s, s:s, s:s}", "alg",
                                    crd_assertion_algorithm_name(signer->algorithm), "typ", "JWT",
                                    signer->algorithm == CRD_ASSERTION_PS256 ? "x5t#S256" : "x5t",
                                    signer->thumbprint);
    json_t *claims_json = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "aud", audience,
                                    "iss", client_id, "sub", client_id, "jti", jti, "nbf",
                                    (json_int_t)now_s, "iat", (json_int_t)now_s, "exp",
                                    (json_int_t)(now_s + CRD_ASSERTION_LIFETIME_S));
    header = header_json != NULL ? encode_json(header_json) : NULL;
    claims = claims_json != NULL ? encode_json(claims_json) : NULL;
    json_decref(header_json);
    json_decref(claims_json);
    if (header == NULL || claims == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }

    size_t signing_input_len = strlen(header) + 1 + strlen(claims);
    size_t jwt_size = signing_input_len + 1 + 4 * ((1024 + 2) / 3) + 1;
    jwt = malloc(jwt_size);
    if (jwt == NULL) {
        r = crd_error_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    snprintf(jwt, jwt_size, "%s.%s", header, claims);
    if (sign_bytes(signer, jwt, signing_input_len, &signature, &signature_len) < 0 ||
        signature_len > 1024) {
        r = crd_error_set(err, -EIO, "cannot sign the client assertion with the client key");
        goto out;
    }
    jwt[signing_input_len] = '.';
    crd_base64url_encode(signature, signature_len, jwt + signing_input_len + 1);

    r = crd_secret_new(jwt, strlen(jwt), ret_jwt, err);
out:
    if (jwt != NULL) {
        OPENSSL_cleanse(jwt, strlen(jwt));
    }
    free(jwt);
    free(signature);
    free(header);
    free(claims);
    return r;
}
