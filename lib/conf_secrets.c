/* SPDX-License-Identifier: MIT */
/*
 * Loading of secrets and TLS material. Each file is named by its key or found
 * in $CREDENTIALS_DIRECTORY, then read and checked, and OpenSSL checks that
 * the certificate and the private key belong together. Problems are reported
 * at the key that names the file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "conf_internal.h"

/* A certificate chain file; real ones are a few KiB. */
#define CONF_MAX_CERT_SIZE (1024 * 1024)
#define CONF_CLIENT_STATE_MAX 128

/* ------------------------------------------------------------------------ */
/* Secrets, files and TLS                                                   */

/* The line and shown value of a key for messages: its entry, else the header. */
unsigned conf_key_line(const struct conf_section *s, const char *key)
{
    const struct conf_entry *e = conf_find_entry(s, key);
    return e != NULL ? e->line : s->line;
}

const char *conf_key_value(const struct conf_section *s, const char *key)
{
    const struct conf_entry *e = conf_find_entry(s, key);
    return e != NULL ? e->value : NULL;
}

bool conf_option_set(const struct conf_section *s, const char *key)
{
    size_t index = 0;
    return conf_find_option(s->kind, key, &index) != NULL && s->status[index] == CONF_SET;
}

bool conf_option_invalid(const struct conf_section *s, const char *key)
{
    size_t index = 0;
    return conf_find_option(s->kind, key, &index) != NULL && s->status[index] == CONF_INVALID;
}

/*
 * Finds the file a secret comes from: the configured path, else the named
 * credential in $CREDENTIALS_DIRECTORY. Returns 1 and a malloc'ed path in
 * *ret_path, or 0 when there is neither (or the key was invalid), or -ENOMEM.
 */
static int locate_credential(struct loader *ld, const char *configured, const char *credential,
                             char **ret_path)
{
    char *path = NULL;
    if (configured != NULL) {
        path = strdup(configured);
    } else if (ld->credentials_directory != NULL) {
        if (asprintf(&path, "%s/%s", ld->credentials_directory, credential) < 0) {
            path = NULL;
        } else if (access(path, F_OK) < 0 && errno == ENOENT) {
            free(path);
            return 0;
        }
    } else {
        return 0;
    }
    if (path == NULL) {
        ld->oom = true;
        return -ENOMEM;
    }
    *ret_path = path;
    return 1;
}

/* "; $CREDENTIALS_DIRECTORY ('...') has no 'NAME'", or "" when it is not set. */
static char *credentials_note(struct loader *ld, const char *credential)
{
    char *note = NULL;
    int r = ld->credentials_directory != NULL
                ? asprintf(&note, " ($CREDENTIALS_DIRECTORY '%s' has no file '%s')",
                           ld->credentials_directory, credential)
                : asprintf(&note, " ($CREDENTIALS_DIRECTORY is not set)");
    if (r < 0) {
        ld->oom = true;
        return NULL;
    }
    return note;
}

/*
 * Reads a secret file and reports problems at the key (its line when the
 * path was configured, else the section header). Returns the secret or NULL.
 */
static struct crd_secret *read_secret(struct loader *ld, const struct conf_section *s,
                                      const char *key, const char *path, bool strip_newline)
{
    struct crd_secret *secret = NULL;
    struct crd_error err = {0};
    bool loose = false;
    const char *value = conf_key_value(s, key);
    unsigned line = conf_key_line(s, key);

    int r = crd_secret_read_file(path, strip_newline, &secret, &loose, &err);
    if (r < 0) {
        const char *fix = "point the key at the file that holds the secret";
        if (r == -ENOENT) {
            fix = "create it, or correct the path";
        } else if (r == -EACCES) {
            fix = "let the service user read it (chown, or systemd LoadCredential=)";
        }
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, line, s->label, key, value, "%s; %s", err.message,
                      fix);
        return NULL;
    }
    if (loose) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_WARNING, line, s->label, key, value,
                      "the group or others have access to the secret file '%s'; run 'chmod 600 %s'",
                      path, path);
    }
    return secret;
}

static int read_text_file(const char *path, size_t max, char **ret_text, const char **ret_why);

/* The name of a credential in $CREDENTIALS_DIRECTORY: "client_secret", or "client_secret.NAME". */
static char *credential_name(struct loader *ld, const char *base, const char *suffix)
{
    char *name = NULL;
    if (asprintf(&name, "%s%s", base, suffix) < 0) {
        ld->oom = true;
        return NULL;
    }
    return name;
}

/*
 * Loads certificate credentials when they are configured: client_certificate_file
 * (or the credential 'client_certificate' while client_secret_file is unset) and
 * its key. Returns true when certificate credentials are in use, or were meant
 * to be, so that no client secret is required.
 */
static bool load_client_certificate(struct loader *ld, const struct conf_section *s,
                                    struct crd_config_tenant *tenant,
                                    const char *credential_suffix)
{
    if (conf_option_invalid(s, "client_certificate_file") ||
        conf_option_invalid(s, "client_key_file")) {
        return true;
    }

    char *cert_credential = credential_name(ld, "client_certificate", credential_suffix);
    char *key_credential = credential_name(ld, "client_key", credential_suffix);
    if (cert_credential == NULL || key_credential == NULL) {
        free(cert_credential);
        free(key_credential);
        return true;
    }

    /* An explicit client_secret_file wins over a 'client_certificate' credential. */
    char *cert_path = NULL;
    if ((tenant->client_certificate_file != NULL || tenant->client_secret_file == NULL) &&
        locate_credential(ld, tenant->client_certificate_file, cert_credential, &cert_path) <= 0) {
        cert_path = NULL;
    }
    free(cert_credential);
    if (cert_path == NULL) {
        free(key_credential);
        if (tenant->client_key_file != NULL) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_key_file"), s->label,
                          "client_key_file", conf_key_value(s, "client_key_file"),
                          "a client key without a certificate; set client_certificate_file too, "
                          "or remove client_key_file");
        }
        return false;
    }
    if (tenant->client_secret_file != NULL) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_secret_file"), s->label,
                      "client_secret_file", conf_key_value(s, "client_secret_file"),
                      "both a client secret and a client certificate are set; keep one of "
                      "client_secret_file and client_certificate_file");
        free(cert_path);
        free(key_credential);
        return true;
    }

    char *text = NULL;
    const char *why = NULL;
    if (read_text_file(cert_path, CONF_MAX_CERT_SIZE, &text, &why) < 0) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_certificate_file"),
                      s->label, "client_certificate_file",
                      conf_key_value(s, "client_certificate_file"),
                      "cannot read the client certificate '%s': %s", cert_path, why);
        free(cert_path);
        free(key_credential);
        return true;
    }

    char *key_path = NULL;
    int r = locate_credential(ld, tenant->client_key_file, key_credential, &key_path);
    if (r == 0) {
        char *note = credentials_note(ld, key_credential);
        conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_certificate_file"),
                      s->label, "client_key_file", NULL,
                      "no private key for the client certificate%s; set client_key_file = "
                      "/etc/callrecd/client.key (mode 0600), or pass the credential "
                      "'%s' with systemd", note != NULL ? note : "", key_credential);
        free(note);
    }
    free(key_credential);
    struct crd_secret *key = r > 0 ? read_secret(ld, s, "client_key_file", key_path, false) : NULL;

    if (key != NULL) {
        struct crd_assertion_signer *signer = NULL;
        struct crd_error err = {0};
        if (crd_assertion_signer_new(text, key, tenant->assertion, &signer, &err) < 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_certificate_file"),
                          s->label, "client_certificate_file",
                          conf_key_value(s, "client_certificate_file"), "'%s' with '%s': %s",
                          cert_path, key_path, err.message);
        }
        crd_assertion_signer_free(signer);
    }
    tenant->client_certificate = text;
    tenant->client_key = key;
    free(key_path);
    free(cert_path);
    return true;
}

void conf_load_client_secret(struct loader *ld, const struct conf_section *s,
                             struct crd_config_tenant *tenant, const char *credential_suffix)
{
    if (load_client_certificate(ld, s, tenant, credential_suffix)) {
        return;
    }
    if (conf_option_invalid(s, "client_secret_file")) {
        return;
    }

    char *credential = credential_name(ld, "client_secret", credential_suffix);
    if (credential == NULL) {
        return;
    }
    char *path = NULL;
    int r = locate_credential(ld, tenant->client_secret_file, credential, &path);
    if (r == 0) {
        char *note = credentials_note(ld, credential);
        if (note != NULL) {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "client_secret_file", NULL,
                "no client secret%s; set client_secret_file = /etc/callrecd/%s "
                "(mode 0600), or pass the credential '%s' with systemd "
                "(LoadCredential=%s:/etc/callrecd/%s), or use a "
                "certificate with client_certificate_file and client_key_file",
                note, credential, credential, credential, credential);
        }
        free(note);
    }
    free(credential);
    if (r <= 0) {
        return;
    }

    struct crd_secret *secret = read_secret(ld, s, "client_secret_file", path, true);
    if (secret != NULL) {
        const char *bytes = crd_secret_bytes(secret);
        size_t len = crd_secret_len(secret);
        bool clean = len > 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)bytes[i];
            clean = clean && c >= 0x20 && c != 0x7f;
        }
        if (!clean) {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_secret_file"), s->label,
                "client_secret_file", conf_key_value(s, "client_secret_file"),
                "the client secret in '%s' is %s; the file must hold the secret's value on "
                "one line and nothing else",
                path, len == 0 ? "empty" : "not on one line (or has control characters)");
            crd_secret_free(secret);
            secret = NULL;
        }
    }
    tenant->client_secret = secret;
    free(path);
}

void conf_load_client_state(struct loader *ld, const struct conf_section *s,
                            struct crd_config_tenant *tenant, const char *credential_suffix)
{
    if (conf_option_invalid(s, "client_state_file")) {
        return;
    }

    char *credential = credential_name(ld, "client_state", credential_suffix);
    if (credential == NULL) {
        return;
    }
    char *path = NULL;
    int r = locate_credential(ld, tenant->client_state_file, credential, &path);
    free(credential);
    if (r <= 0) {
        return;  /* none: the daemon generates one and keeps it in the store */
    }
    struct crd_secret *secret = read_secret(ld, s, "client_state_file", path, true);
    if (secret != NULL) {
        const char *bytes = crd_secret_bytes(secret);
        size_t len = crd_secret_len(secret);
        if (len == 0 || len > CONF_CLIENT_STATE_MAX || !conf_is_token(bytes, len)) {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "client_state_file"), s->label,
                "client_state_file", conf_key_value(s, "client_state_file"),
                "the client state in '%s' must be 1 to %d printable ASCII characters without "
                "spaces; write such a value into the file, or remove the key to let callrecd "
                "generate one",
                path, CONF_CLIENT_STATE_MAX);
            crd_secret_free(secret);
            secret = NULL;
        }
    }
    tenant->client_state = secret;
    free(path);
}

/* Reads a small public file (a certificate). Returns 0, or -errno with *ret_why set. */
static int read_text_file(const char *path, size_t max, char **ret_text, const char **ret_why)
{
    int r = 0;
    char *text = NULL;
    size_t used = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        *ret_why = strerror(errno);
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = -EINVAL;
        *ret_why = "not a regular file";
        goto out;
    }
    text = malloc(max + 1);
    if (text == NULL) {
        r = -ENOMEM;
        *ret_why = "out of memory";
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, text + used, max + 1 - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            r = -errno;
            *ret_why = strerror(errno);
            goto out;
        }
        if (n == 0) {
            break;
        }
        used += (size_t)n;
        if (used > max) {
            r = -EFBIG;
            *ret_why = "the file is too large";
            goto out;
        }
    }
    text[used] = '\0';
    *ret_text = text;
    text = NULL;
out:
    free(text);
    if (fd >= 0) {
        close(fd);
    }
    return r;
}

/* A PEM password callback that never prompts: an encrypted key is an error, not a question. */
static int no_password(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

/*
 * Checks with OpenSSL that the certificate is PEM X.509, the key a PEM
 * private key, and that they belong together. Messages name the files,
 * never the key's bytes.
 */
static void check_tls_pair(struct loader *ld, const struct conf_section *s, const char *cert_path,
                           const char *key_path)
{
    const struct crd_config *config = ld->config;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;

    bio = BIO_new_mem_buf(config->listener.tls_certificate, -1);
    if (bio == NULL) {
        ld->oom = true;
        goto out;
    }
    cert = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    BIO_free(bio);
    bio = NULL;
    if (cert == NULL) {
        conf_add_diag(
            ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tls_certificate"), s->label,
            "tls_certificate", conf_key_value(s, "tls_certificate"),
            "'%s' holds no PEM X.509 certificate (-----BEGIN CERTIFICATE-----); name the PEM "
            "certificate chain, or convert a DER file with 'openssl x509 -inform der -in "
            "FILE -out FILE.pem'",
            cert_path);
    } else if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
        conf_add_diag(ld, CRD_DIAGNOSTIC_WARNING, conf_key_line(s, "tls_certificate"), s->label,
                      "tls_certificate", conf_key_value(s, "tls_certificate"),
                      "the certificate in '%s' has expired, so Microsoft Graph will not deliver "
                      "notifications; renew it",
                      cert_path);
    }

    const struct crd_secret *secret = config->listener.tls_key;
    bio = BIO_new_mem_buf(crd_secret_bytes(secret), (int)crd_secret_len(secret));
    if (bio == NULL) {
        ld->oom = true;
        goto out;
    }
    key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (key == NULL) {
        const char *bytes = crd_secret_bytes(secret);
        if (strstr(bytes, "ENCRYPTED") != NULL) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tls_key"), s->label,
                          "tls_key", conf_key_value(s, "tls_key"),
                          "the private key in '%s' is encrypted with a passphrase, which callrecd "
                          "cannot ask for; store it decrypted with 'openssl pkey -in KEY -out "
                          "KEY.plain' and chmod 600 the result",
                          key_path);
        } else {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tls_key"), s->label, "tls_key",
                conf_key_value(s, "tls_key"),
                "'%s' holds no PEM private key (-----BEGIN PRIVATE KEY-----); name the key "
                "file that belongs to the certificate",
                key_path);
        }
        goto out;
    }

    if (cert != NULL && X509_check_private_key(cert, key) != 1) {
        conf_add_diag(
            ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tls_key"), s->label, "tls_key",
            conf_key_value(s, "tls_key"),
            "the private key in '%s' does not match the certificate in '%s'; use the key "
            "the certificate was issued for (compare 'openssl x509 -noout -pubkey -in CERT' "
            "with 'openssl pkey -pubout -in KEY')",
            key_path, cert_path);
    }

out:
    BIO_free(bio);
    EVP_PKEY_free(key);
    X509_free(cert);
    ERR_clear_error();
}

void conf_load_tls(struct loader *ld)
{
    struct conf_section *s = conf_fixed_section(ld, CONF_KIND_LISTENER);
    struct crd_config *config = ld->config;
    char *cert_path = NULL;
    char *key_path = NULL;

    if (conf_option_invalid(s, "tls")) {
        return;  /* already reported; whether TLS material is needed is unknown */
    }
    if (!config->listener.tls) {
        static const char *const ignored[] = {"tls_certificate", "tls_key"};
        for (size_t i = 0; i < ARRAY_SIZE(ignored); i++) {
            if (conf_option_set(s, ignored[i])) {
                conf_add_diag(ld, CRD_DIAGNOSTIC_WARNING, conf_key_line(s, ignored[i]), s->label,
                              ignored[i], conf_key_value(s, ignored[i]),
                              "ignored because tls is off; remove the line, or set tls = on");
            }
        }
        return;
    }
    if (conf_option_invalid(s, "tls_certificate") || conf_option_invalid(s, "tls_key")) {
        return;
    }

    int r = locate_credential(ld, config->listener.tls_certificate_file, "tls_certificate",
                              &cert_path);
    if (r == 0) {
        char *note = credentials_note(ld, "tls_certificate");
        if (note != NULL) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "tls_certificate", NULL,
                          "tls is on but there is no certificate%s; set tls_certificate = "
                          "/etc/callrecd/tls/fullchain.pem, pass the credential 'tls_certificate' "
                          "with systemd LoadCredential=, or set tls = off behind a TLS-terminating "
                          "proxy",
                          note);
        }
        free(note);
    }
    int k = locate_credential(ld, config->listener.tls_key_file, "tls_key", &key_path);
    if (k == 0) {
        char *note = credentials_note(ld, "tls_key");
        if (note != NULL) {
            conf_add_diag(
                ld, CRD_DIAGNOSTIC_ERROR, s->line, s->label, "tls_key", NULL,
                "tls is on but there is no private key%s; set tls_key = "
                "/etc/callrecd/tls/privkey.pem (mode 0600), pass the credential 'tls_key' "
                "with systemd LoadCredential=, or set tls = off behind a TLS-terminating "
                "proxy",
                note);
        }
        free(note);
    }

    bool have_cert = false;
    if (r > 0) {
        const char *why = NULL;
        char *text = NULL;
        int rr = read_text_file(cert_path, CONF_MAX_CERT_SIZE, &text, &why);
        if (rr < 0) {
            conf_add_diag(ld, CRD_DIAGNOSTIC_ERROR, conf_key_line(s, "tls_certificate"), s->label,
                          "tls_certificate", conf_key_value(s, "tls_certificate"),
                          "cannot read the certificate '%s': %s; %s", cert_path, why,
                          rr == -ENOENT ? "create it, or correct the path"
                                        : "name a readable PEM certificate file");
        } else {
            config->listener.tls_certificate = text;
            have_cert = true;
            if (config->listener.tls_certificate_file == NULL) {
                config->listener.tls_certificate_file = cert_path;
                cert_path = NULL;
            }
        }
    }
    if (k > 0) {
        config->listener.tls_key = read_secret(ld, s, "tls_key", key_path, false);
    }
    if (have_cert && config->listener.tls_key != NULL) {
        check_tls_pair(ld, s,
                       cert_path != NULL ? cert_path : config->listener.tls_certificate_file,
                       key_path);
    }
    free(cert_path);
    free(key_path);
}
