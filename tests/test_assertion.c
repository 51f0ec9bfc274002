/* SPDX-License-Identifier: MIT */
/*
 * Client assertion JWTs: header and claims as Entra ID expects them, and a
 * signature that verifies with the certificate's public key, for PS256 and
 * RS256. Certificates come from tests/testcert (--rsa for RSA keys).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "assertion.h"
#include "harness.h"

#define AUDIENCE "https://login.example.test/tenant/oauth2/v2.0/token"
#define CLIENT_ID "0b7f0d3a-5a55-4e4e-9d7d-3f2c1b0a9e8d"

/* Material from testcert in a fresh directory; rsa selects RSA-2048 over P-256. */
struct material {
    char *dir;
    char *certificate;
    struct crd_secret *key;
};

static void make_material(struct material *m, bool rsa)
{
    m->dir = crd_test_make_tmpdir("crd-assertion");
    char *testcert = crd_test_build_path("tests/testcert");
    char *argv_rsa[] = {testcert, "--rsa", m->dir, NULL};
    char *argv_ec[] = {testcert, m->dir, NULL};
    ck_assert_int_eq(crd_test_run(rsa ? argv_rsa : argv_ec, NULL), 0);
    free(testcert);

    char *path = NULL;
    ck_assert_int_ge(asprintf(&path, "%s/server.pem", m->dir), 0);
    m->certificate = crd_test_read_file(path, NULL);
    free(path);
    ck_assert_int_ge(asprintf(&path, "%s/server.key", m->dir), 0);
    char *key = crd_test_read_file(path, NULL);
    free(path);
    ck_assert_ptr_nonnull(m->certificate);
    ck_assert_ptr_nonnull(key);
    ck_assert_int_eq(crd_secret_new(key, strlen(key), &m->key, NULL), 0);
    free(key);
}

static void free_material(struct material *m)
{
    crd_test_remove_tree(m->dir);
    free(m->dir);
    free(m->certificate);
    crd_secret_free(m->key);
}

static unsigned char *base64url_decode(const char *in, size_t len, size_t *ret_len)
{
    unsigned char *out = malloc(len + 1);
    size_t o = 0;
    unsigned bits = 0;
    int n_bits = 0;
    for (size_t i = 0; i < len; i++) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *at = strchr(alphabet, in[i]);
        ck_assert_msg(at != NULL && in[i] != '\0', "not base64url: '%c'", in[i]);
        bits = (bits << 6) | (unsigned)(at - alphabet);
        n_bits += 6;
        if (n_bits >= 8) {
            n_bits -= 8;
            out[o++] = (unsigned char)(bits >> n_bits);
        }
    }
    out[o] = '\0';
    *ret_len = o;
    return out;
}

static json_t *decode_part(const char *part, size_t len)
{
    size_t decoded_len = 0;
    unsigned char *decoded = base64url_decode(part, len, &decoded_len);
    json_t *json = json_loadb((const char *)decoded, decoded_len, 0, NULL);
    free(decoded);
    ck_assert_ptr_nonnull(json);
    return json;
}

static void check_assertion(enum crd_assertion_algorithm algorithm)
{
    struct material m;
    make_material(&m, true);
    struct crd_assertion_signer *signer = NULL;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_assertion_signer_new(m.certificate, m.key, algorithm, &signer, &err), 0);

    struct crd_secret *jwt = NULL;
    ck_assert_int_eq(crd_assertion_sign(signer, AUDIENCE, CLIENT_ID, 1700000000, &jwt, &err), 0);
    const char *text = crd_secret_bytes(jwt);
    const char *dot1 = strchr(text, '.');
    ck_assert_ptr_nonnull(dot1);
    const char *dot2 = strchr(dot1 + 1, '.');
    ck_assert_ptr_nonnull(dot2);

    json_t *header = decode_part(text, (size_t)(dot1 - text));
    json_t *claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    ck_assert_str_eq(json_string_value(json_object_get(header, "alg")),
                     algorithm == CRD_ASSERTION_PS256 ? "PS256" : "RS256");
    ck_assert_str_eq(json_string_value(json_object_get(header, "typ")), "JWT");

    /* The thumbprint is of the certificate's DER form. */
    BIO *bio = BIO_new_mem_buf(m.certificate, -1);
    X509 *certificate = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned digest_len = 0;
    X509_digest(certificate, algorithm == CRD_ASSERTION_PS256 ? EVP_sha256() : EVP_sha1(), digest,
                &digest_len);
    char thumbprint[64];
    crd_base64url_encode(digest, digest_len, thumbprint);
    const char *thumbprint_key = algorithm == CRD_ASSERTION_PS256 ? "x5t#S256" : "x5t";
    ck_assert_str_eq(json_string_value(json_object_get(header, thumbprint_key)), thumbprint);

    ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")), AUDIENCE);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "iss")), CLIENT_ID);
    ck_assert_str_eq(json_string_value(json_object_get(claims, "sub")), CLIENT_ID);
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "nbf")), 1700000000);
    ck_assert_int_eq(json_integer_value(json_object_get(claims, "exp")),
                     1700000000 + CRD_ASSERTION_LIFETIME_S);
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    ck_assert_ptr_nonnull(jti);
    ck_assert_uint_eq(strlen(jti), 36);

    /* The signature verifies with the certificate's public key. */
    size_t signature_len = 0;
    unsigned char *signature = base64url_decode(dot2 + 1, strlen(dot2 + 1), &signature_len);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pkey_ctx = NULL;
    EVP_PKEY *public_key = X509_get0_pubkey(certificate);
    ck_assert_int_eq(EVP_DigestVerifyInit(ctx, &pkey_ctx, EVP_sha256(), NULL, public_key), 1);
    if (algorithm == CRD_ASSERTION_PS256) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pkey_ctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    ck_assert_int_eq(EVP_DigestVerify(ctx, signature, signature_len, (const unsigned char *)text,
                                      (size_t)(dot2 - text)),
                     1);

    /* A second assertion has a new jti. */
    struct crd_secret *second = NULL;
    ck_assert_int_eq(crd_assertion_sign(signer, AUDIENCE, CLIENT_ID, 1700000000, &second, &err),
                     0);
    ck_assert_str_ne(crd_secret_bytes(second), text);

    crd_secret_free(second);
    EVP_MD_CTX_free(ctx);
    free(signature);
    X509_free(certificate);
    json_decref(header);
    json_decref(claims);
    crd_secret_free(jwt);
    crd_assertion_signer_free(signer);
    free_material(&m);
}

START_TEST(ps256_assertion_verifies)
{
    check_assertion(CRD_ASSERTION_PS256);
}
END_TEST

START_TEST(rs256_assertion_verifies)
{
    check_assertion(CRD_ASSERTION_RS256);
}
END_TEST

START_TEST(mismatched_key_rejected)
{
    struct material a;
    struct material b;
    make_material(&a, true);
    make_material(&b, true);
    struct crd_assertion_signer *signer = NULL;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_assertion_signer_new(a.certificate, b.key, CRD_ASSERTION_PS256, &signer,
                                              &err),
                     -EINVAL);
    ck_assert_ptr_null(signer);
    ck_assert_ptr_nonnull(strstr(err.message, "does not belong to the client certificate"));
    ck_assert_ptr_null(strstr(err.message, "PRIVATE"));
    free_material(&a);
    free_material(&b);
}
END_TEST

START_TEST(non_rsa_key_rejected)
{
    struct material m;
    make_material(&m, false);
    struct crd_assertion_signer *signer = NULL;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_assertion_signer_new(m.certificate, m.key, CRD_ASSERTION_RS256, &signer,
                                              &err),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "not an RSA key"));
    free_material(&m);
}
END_TEST

START_TEST(base64url_known_vectors)
{
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } vectors[] = {
        {"", 0, ""}, {"f", 1, "Zg"}, {"fo", 2, "Zm8"}, {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg"}, {"\xfb\xff", 2, "-_8"}, {"\x00\x00\x00", 3, "AAAA"},
    };
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char out[16];
        crd_base64url_encode((const unsigned char *)vectors[i].in, vectors[i].len, out);
        ck_assert_str_eq(out, vectors[i].out);
    }
}
END_TEST

START_TEST(garbage_rejected)
{
    struct crd_secret *key = NULL;
    ck_assert_int_eq(crd_secret_new("not a key", 9, &key, NULL), 0);
    struct crd_assertion_signer *signer = NULL;
    struct crd_error err = {0};
    ck_assert_int_eq(crd_assertion_signer_new("not a certificate", key, CRD_ASSERTION_PS256,
                                              &signer, &err),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "not a PEM X.509 certificate"));
    crd_secret_free(key);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("assertion");
    TCase *tcase = tcase_create("client assertion");
    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, ps256_assertion_verifies);
    tcase_add_test(tcase, rs256_assertion_verifies);
    tcase_add_test(tcase, mismatched_key_rejected);
    tcase_add_test(tcase, non_rsa_key_rejected);
    tcase_add_test(tcase, garbage_rejected);
    tcase_add_test(tcase, base64url_known_vectors);
    suite_add_tcase(suite, tcase);

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
