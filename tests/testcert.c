/* SPDX-License-Identifier: MIT */
/*
 * testcert: writes a throw-away test CA and a server certificate for
 * localhost, for the test suite and the demo.
 *
 *   testcert [--rsa] DIR
 *
 * DIR/ca.pem is the CA certificate, DIR/server.pem the server certificate
 * alone (no chain) and DIR/server.key its PKCS#8 PEM private key, mode 0600.
 * Keys are ECDSA P-256 by default, or RSA-2048 with --rsa. A P-256
 * signature costs the server much less CPU per handshake than an RSA-2048
 * one. The CA key exists only in memory: it signs the server certificate
 * and is freed.
 *
 * Prints nothing on success. On failure it prints the reason to stderr and
 * exits with status 1.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define SERIAL_BYTES 16                        /* 128-bit serial numbers */
#define NOT_BEFORE_OFFSET_S (-60L * 60)        /* one hour ago, to absorb clock skew */
#define NOT_AFTER_OFFSET_S (2L * 24 * 60 * 60) /* two days ahead */

/* Prints "testcert: WHAT: <first queued OpenSSL error>", clears the queue and returns -EIO. */
static int report_openssl_error(const char *what)
{
    unsigned long code = ERR_get_error();
    char reason[256] = "no OpenSSL error was queued";
    if (code != 0) {
        ERR_error_string_n(code, reason, sizeof(reason));
    }
    ERR_clear_error();
    fprintf(stderr, "testcert: %s: %s\n", what, reason);
    return -EIO;
}

static int generate_key(bool rsa, EVP_PKEY **ret_key)
{
    EVP_PKEY *key = NULL;
    if (rsa) {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    } else {
        key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }
    if (key == NULL) {
        return report_openssl_error(rsa ? "generating an RSA-2048 key failed"
                                        : "generating an ECDSA P-256 key failed");
    }
    *ret_key = key;
    return 0;
}

static int set_random_serial(X509 *cert)
{
    unsigned char bytes[SERIAL_BYTES];
    BIGNUM *serial = NULL;
    int r = 0;

    if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
        r = report_openssl_error("reading random bytes for a serial number failed");
        goto out;
    }
    /* RFC 5280 requires a positive, non-zero serial number. */
    bytes[0] |= 0x01;

    serial = BN_bin2bn(bytes, sizeof(bytes), NULL);
    if (serial == NULL || BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) == NULL) {
        r = report_openssl_error("setting the serial number failed");
        goto out;
    }

out:
    BN_free(serial);
    return r;
}

/* Adds one extension written in openssl.cnf syntax, such as "critical,CA:TRUE". */
static int add_extension(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);

    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (ext == NULL || X509_add_ext(cert, ext, -1) != 1) {
        X509_EXTENSION_free(ext);
        char what[128];
        snprintf(what, sizeof(what), "adding extension %s = '%s' failed", OBJ_nid2sn(nid), value);
        return report_openssl_error(what);
    }
    X509_EXTENSION_free(ext);
    return 0;
}

/*
 * Creates a certificate for key with subject CN=common_name, signed by
 * issuer_key. issuer is the issuer's certificate, or NULL for a
 * self-signed one. Extensions are added by the caller before signing.
 */
static int build_certificate(const char *common_name, EVP_PKEY *key, X509 *issuer,
                             X509 **ret_cert)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    int r = 0;

    if (cert == NULL || name == NULL) {
        r = report_openssl_error("allocating a certificate failed");
        goto out;
    }
    if (X509_set_version(cert, X509_VERSION_3) != 1) {
        r = report_openssl_error("setting the certificate version failed");
        goto out;
    }
    r = set_random_serial(cert);
    if (r < 0) {
        goto out;
    }

    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name,
                                   -1, -1, 0) != 1 ||
        X509_set_subject_name(cert, name) != 1) {
        r = report_openssl_error("setting the subject name failed");
        goto out;
    }
    X509_NAME *issuer_name = issuer != NULL ? X509_get_subject_name(issuer) : name;
    if (X509_set_issuer_name(cert, issuer_name) != 1) {
        r = report_openssl_error("setting the issuer name failed");
        goto out;
    }

    if (X509_gmtime_adj(X509_getm_notBefore(cert), NOT_BEFORE_OFFSET_S) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), NOT_AFTER_OFFSET_S) == NULL) {
        r = report_openssl_error("setting the validity period failed");
        goto out;
    }
    if (X509_set_pubkey(cert, key) != 1) {
        r = report_openssl_error("setting the public key failed");
        goto out;
    }

    *ret_cert = cert;
    cert = NULL;

out:
    X509_NAME_free(name);
    X509_free(cert);
    return r;
}

static int sign_certificate(X509 *cert, EVP_PKEY *issuer_key, const char *what)
{
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        char message[128];
        snprintf(message, sizeof(message), "signing the %s certificate failed", what);
        return report_openssl_error(message);
    }
    return 0;
}

static int make_ca(EVP_PKEY *ca_key, X509 **ret_ca)
{
    X509 *ca = NULL;
    int r = build_certificate("callrecd test CA", ca_key, NULL, &ca);
    if (r < 0) {
        goto out;
    }

    if ((r = add_extension(ca, ca, NID_basic_constraints, "critical,CA:TRUE")) < 0 ||
        (r = add_extension(ca, ca, NID_key_usage, "critical,keyCertSign")) < 0 ||
        (r = add_extension(ca, ca, NID_subject_key_identifier, "hash")) < 0) {
        goto out;
    }
    r = sign_certificate(ca, ca_key, "CA");
    if (r < 0) {
        goto out;
    }

    *ret_ca = ca;
    ca = NULL;

out:
    X509_free(ca);
    return r;
}

static int make_server(EVP_PKEY *server_key, X509 *ca, EVP_PKEY *ca_key, X509 **ret_server)
{
    X509 *server = NULL;
    int r = build_certificate("localhost", server_key, ca, &server);
    if (r < 0) {
        goto out;
    }

    if ((r = add_extension(server, ca, NID_basic_constraints, "CA:FALSE")) < 0 ||
        (r = add_extension(server, ca, NID_ext_key_usage, "serverAuth")) < 0 ||
        (r = add_extension(server, ca, NID_subject_alt_name,
                           "DNS:localhost,IP:127.0.0.1,IP:::1")) < 0 ||
        (r = add_extension(server, ca, NID_subject_key_identifier, "hash")) < 0 ||
        (r = add_extension(server, ca, NID_authority_key_identifier, "keyid:always")) < 0) {
        goto out;
    }
    r = sign_certificate(server, ca_key, "server");
    if (r < 0) {
        goto out;
    }

    *ret_server = server;
    server = NULL;

out:
    X509_free(server);
    return r;
}

/*
 * Writes DIR/NAME with the given mode: the PEM of cert, or the PKCS#8 PEM
 * of key when cert is NULL. An existing file is truncated and its mode is
 * reset, so an old server.key cannot stay readable by others.
 */
static int write_pem_file(const char *dir, const char *name, mode_t mode, X509 *cert,
                          EVP_PKEY *key)
{
    char path[4096];
    FILE *file = NULL;
    int fd = -1;
    int r = 0;

    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
        fprintf(stderr, "testcert: output path '%s/%s' is too long; use a shorter DIR\n", dir,
                name);
        return -ENAMETOOLONG;
    }

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0 || fchmod(fd, mode) < 0) {
        r = -errno;
        fprintf(stderr, "testcert: cannot write '%s': %s\n", path, strerror(-r));
        goto out;
    }
    file = fdopen(fd, "w");
    if (file == NULL) {
        r = -errno;
        fprintf(stderr, "testcert: cannot write '%s': %s\n", path, strerror(-r));
        goto out;
    }
    fd = -1; /* the FILE owns it now */

    int written = cert != NULL ? PEM_write_X509(file, cert)
                               : PEM_write_PKCS8PrivateKey(file, key, NULL, NULL, 0, NULL, NULL);
    if (written != 1) {
        char what[4200];
        snprintf(what, sizeof(what), "writing PEM to '%s' failed", path);
        r = report_openssl_error(what);
        goto out;
    }

out:
    if (file != NULL && fclose(file) != 0 && r == 0) {
        r = -errno;
        fprintf(stderr, "testcert: cannot write '%s': %s\n", path, strerror(-r));
    }
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

static int write_test_pki(const char *dir, bool rsa)
{
    EVP_PKEY *ca_key = NULL;
    EVP_PKEY *server_key = NULL;
    X509 *ca = NULL;
    X509 *server = NULL;

    int r = generate_key(rsa, &ca_key);
    if (r < 0) {
        goto out;
    }
    r = generate_key(rsa, &server_key);
    if (r < 0) {
        goto out;
    }
    r = make_ca(ca_key, &ca);
    if (r < 0) {
        goto out;
    }
    r = make_server(server_key, ca, ca_key, &server);
    if (r < 0) {
        goto out;
    }

    r = write_pem_file(dir, "ca.pem", 0644, ca, NULL);
    if (r < 0) {
        goto out;
    }
    r = write_pem_file(dir, "server.pem", 0644, server, NULL);
    if (r < 0) {
        goto out;
    }
    r = write_pem_file(dir, "server.key", 0600, NULL, server_key);

out:
    X509_free(server);
    X509_free(ca);
    EVP_PKEY_free(server_key);
    EVP_PKEY_free(ca_key);
    return r;
}

static void print_usage(FILE *stream)
{
    fputs("Usage: testcert [--rsa] DIR\n"
          "Writes a test CA and a localhost server certificate signed by it:\n"
          "  DIR/ca.pem      CA certificate\n"
          "  DIR/server.pem  server certificate (CN and SAN localhost, 127.0.0.1, ::1)\n"
          "  DIR/server.key  server private key, PKCS#8 PEM, mode 0600\n"
          "DIR must exist. Certificates are valid from one hour ago for two days.\n"
          "  --rsa   use RSA-2048 keys instead of ECDSA P-256\n",
          stream);
}

int main(int argc, char **argv)
{
    bool rsa = false;
    const char *dir = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rsa") == 0) {
            rsa = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "testcert: unknown option '%s'\n", argv[i]);
            print_usage(stderr);
            return 1;
        } else if (dir != NULL) {
            fprintf(stderr, "testcert: unexpected argument '%s'; give one DIR\n", argv[i]);
            return 1;
        } else {
            dir = argv[i];
        }
    }
    if (dir == NULL) {
        fprintf(stderr, "testcert: missing DIR\n");
        print_usage(stderr);
        return 1;
    }

    struct stat st;
    if (stat(dir, &st) < 0) {
        fprintf(stderr, "testcert: cannot use output directory '%s': %s; create it first\n", dir,
                strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "testcert: '%s' is not a directory; give an existing directory\n", dir);
        return 1;
    }

    return write_test_pki(dir, rsa) < 0 ? 1 : 0;
}
