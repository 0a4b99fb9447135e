{{/*
A `helm test` pod running the Latchkey image's own `latchkey healthcheck` against the release's
Service, so testing pulls no other image. Non-root, read-only, nothing to escalate, like the
server pods.
Usage: include "latchkey.testPod" (dict "context" $ "check" "grpc-health" "args" (list "--grpc" "host:port"))
*/}}
{{- define "latchkey.testPod" -}}
{{- $ := .context -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "latchkey.suffixedName" (dict "context" $ "suffix" (printf "test-%s" .check)) }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "latchkey.labels" (dict "context" $ "component" "test") | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- with $.Values.tests.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.podSecurityContext | nindent 4 }}
  {{- with $.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .check }}
      image: {{ include "latchkey.image" $ | quote }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      args:
        - node
        - dist/main.js
        - healthcheck
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
        - --timeout
        - {{ mul (int $.Values.tests.timeoutSeconds) 1000 | quote }}
      securityContext:
        {{- toYaml $.Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $.Values.tests.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $.Values.tmpSizeLimit }}
{{- end -}}

{{/* The Service's in-cluster host name. */}}
{{- define "latchkey.serviceHost" -}}
{{- printf "%s.%s.svc" (include "latchkey.fullname" .) .Release.Namespace -}}
{{- end -}}
