{{/* Chart name, overridable. */}}
{{- define "latchkey.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every resource name (63 characters at most, a DNS label). */}}
{{- define "latchkey.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A name derived from the full name, for secondary resources: (dict "context" $ "suffix" "migrate"). */}}
{{- define "latchkey.suffixedName" -}}
{{- printf "%s-%s" (include "latchkey.fullname" .context | trunc (int (sub 62 (len .suffix)))) .suffix | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels of one component ("server", "migration" or "sweep"): they tell the pods of the
Deployment, the migration Job and the sweep CronJob apart, so the Service, the PodDisruptionBudget
and the NetworkPolicy only ever select the server.
Usage: include "latchkey.selectorLabels" (dict "context" $ "component" "server")
*/}}
{{- define "latchkey.selectorLabels" -}}
app.kubernetes.io/name: {{ include "latchkey.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
The standard labels of every resource, from this one helper.
Usage: include "latchkey.labels" (dict "context" $ "component" "server")
*/}}
{{- define "latchkey.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "latchkey.selectorLabels" . }}
app.kubernetes.io/version: {{ include "latchkey.imageTag" .context | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: latchkey
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- end -}}

{{- define "latchkey.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* registry/repository:tag, or …@digest when a digest is given. */}}
{{- define "latchkey.image" -}}
{{- $repository := .Values.image.repository -}}
{{- if .Values.image.registry -}}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (include "latchkey.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{- define "latchkey.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "latchkey.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the chart makes from `secret.env` (when it is not empty). */}}
{{- define "latchkey.secretName" -}}
{{- include "latchkey.fullname" . -}}
{{- end -}}

{{/* "true" when the chart makes a Secret: `secret.env` holds something. */}}
{{- define "latchkey.chartSecret" -}}
{{- if .Values.secret.env -}}true{{- end -}}
{{- end -}}

{{/*
The secret variables read from existing Secrets, as a YAML list of EnvVar entries with a
secretKeyRef: DATABASE_URL from `secret.databaseUrlSecret` or `secret.existingSecret`, the others
from `secret.existingSecret`, each under the key `secret.existingSecret.keys` maps it to.
SERVICE_API_KEYS is optional, so a Secret without it is no error.
*/}}
{{- define "latchkey.secretKeyRefs" -}}
{{- $secret := .Values.secret -}}
{{- $entries := list -}}
{{- range $variable := list (list "DATABASE_URL" "databaseUrl" true) (list "KEY_ENCRYPTION_KEY" "keyEncryptionKey" true) (list "SERVICE_API_KEYS" "serviceApiKeys" false) (list "KEY_ENCRYPTION_KEYS" "keyEncryptionKeys" false) -}}
{{- $name := index $variable 0 -}}
{{- $ref := dict -}}
{{- if and (eq $name "DATABASE_URL") $secret.databaseUrlSecret.name -}}
{{- $ref = dict "name" $secret.databaseUrlSecret.name "key" $secret.databaseUrlSecret.key -}}
{{- else if $secret.existingSecret.name -}}
{{- $ref = dict "name" $secret.existingSecret.name "key" (get $secret.existingSecret.keys (index $variable 1)) -}}
{{- end -}}
{{- if $ref -}}
{{- if not (index $variable 2) -}}
{{- $_ := set $ref "optional" true -}}
{{- end -}}
{{- $entries = append $entries (dict "name" $name "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $entries -}}
{{- end -}}

{{/*
Refuses to render an install that cannot start: every missing required value, by name, in one
message. An existing Secret stands in for the secret values (its keys are checked only when the
pods start: `helm template` sees no cluster).
*/}}
{{- define "latchkey.validateValues" -}}
{{- $missing := list -}}
{{- if not .Values.publicUrl -}}
{{- $missing = append $missing "publicUrl (the service's public https:// base URL)" -}}
{{- end -}}
{{- $fromSecrets := list -}}
{{- range include "latchkey.secretKeyRefs" . | fromYamlArray -}}
{{- $fromSecrets = append $fromSecrets .name -}}
{{- end -}}
{{- if not (or (has "DATABASE_URL" $fromSecrets) .Values.secret.env.DATABASE_URL) -}}
{{- $missing = append $missing "secret.env.DATABASE_URL (or an existing Secret: secret.existingSecret.name or secret.databaseUrlSecret.name)" -}}
{{- end -}}
{{- if not (or (has "KEY_ENCRYPTION_KEY" $fromSecrets) .Values.secret.env.KEY_ENCRYPTION_KEY .Values.secret.env.KEY_ENCRYPTION_KEYS) -}}
{{- $missing = append $missing "secret.env.KEY_ENCRYPTION_KEY (or secret.env.KEY_ENCRYPTION_KEYS, or an existing Secret: secret.existingSecret.name)" -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "\n\nlatchkey: required values are missing:\n  - %s\nSee the chart's README (Kubernetes) for each." (join "\n  - " $missing)) -}}
{{- end -}}
{{- if and .Values.grpcRoute.enabled (not .Values.grpcRoute.parentRefs) -}}
{{- fail "\n\nlatchkey: grpcRoute.parentRefs is required when grpcRoute.enabled is true (the Gateway to attach the GRPCRoute to)" -}}
{{- end -}}
{{- end -}}

{{/*
The `env` entries of every Latchkey container after the ones it sets itself, as a YAML list: the
secret variables from existing Secrets, then `extraEnv`. Empty when there are none.
*/}}
{{- define "latchkey.extraEnvEntries" -}}
{{- $entries := include "latchkey.secretKeyRefs" . | fromYamlArray -}}
{{- if .Values.extraEnv -}}
{{- $entries = concat $entries (tpl (toYaml .Values.extraEnv) . | fromYamlArray) -}}
{{- end -}}
{{- if $entries -}}
{{- toYaml $entries -}}
{{- end -}}
{{- end -}}

{{/* The `envFrom` entries from `extraEnvFrom`, as a YAML list; empty when there are none. */}}
{{- define "latchkey.extraEnvFromEntries" -}}
{{- if .Values.extraEnvFrom -}}
{{- tpl (toYaml .Values.extraEnvFrom) . -}}
{{- end -}}
{{- end -}}

{{/*
The service's non-secret environment, as a YAML map of strings: the chart's defaults, then
.Values.env, then what the chart must control itself (ports, public URL, scheduler mode).
*/}}
{{- define "latchkey.environment" -}}
{{- $environment := dict "NODE_ENV" "production" -}}
{{- range $name, $value := .Values.env -}}
{{- $_ := set $environment $name (toString $value) -}}
{{- end -}}
{{- $_ := set $environment "GRPC_PORT" (toString .Values.containerPorts.grpc) -}}
{{- $_ := set $environment "HTTP_PORT" (toString .Values.containerPorts.http) -}}
{{- if .Values.publicUrl -}}
{{- $_ := set $environment "PUBLIC_URL" .Values.publicUrl -}}
{{- end -}}
{{- if eq .Values.scheduler.mode "cronJob" -}}
{{- $_ := set $environment "SCHEDULER_ENABLED" "false" -}}
{{- end -}}
{{- toYaml $environment -}}
{{- end -}}

{{/* The token issuer and audience the mesh checks: the service's own settings unless overridden. */}}
{{- define "latchkey.jwtIssuer" -}}
{{- .Values.istio.requestAuthentication.issuer | default .Values.env.JWT_ISSUER | default .Values.publicUrl -}}
{{- end -}}

{{/* Pod-level settings shared by the server, migration and sweep pods. */}}
{{- define "latchkey.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.tmpSizeLimit }}
  {{- with .Values.extraVolumes }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Container-level settings shared by the server, migration and sweep containers. */}}
{{- define "latchkey.containerCommon" -}}
image: {{ include "latchkey.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end -}}
